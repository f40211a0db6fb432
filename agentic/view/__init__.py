"""The run and search-tree web viewer behind `agentic view`.

`model` folds a recording's events into runs, tasks, timelines and search trees (`tree`,
`timeline`); `follow` reads recordings as they grow; `curves` puts the runs on accuracy-vs-cost
axes; `app` serves the page (`static/`: HTML, JS and CSS shipped in the package, nothing fetched
from the network) and the JSON it polls. Nothing outside `agentic.cli` imports this package.
"""

from agentic.view.follow import Library, Recording
from agentic.view.model import RunState, diff
from agentic.view.tree import layout

__all__ = ["Library", "Recording", "RunState", "diff", "layout"]
