"""`agentic memory`: list, show, delete, export and import the cases of a case bank in a memory
store (the SQLite file `memory.CaseBank` keeps). No model and no embedder are involved: cases
travel with their stored vectors. Reading commands never create a store or a bank.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from agentic.core import ConfigError

if TYPE_CHECKING:
    from memory.case_bank import CaseBank

memory_app = typer.Typer(
    help="Inspect and edit the case banks of a memory store.", no_args_is_help=True
)
out = Console()
err = Console(stderr=True, soft_wrap=True)

T = TypeVar("T")
StoreArg = Annotated[Path, typer.Argument(help="The memory store (an SQLite file).")]
BankOpt = Annotated[str, typer.Option("--bank", help="Which case bank of the store.")]


@contextmanager
def _bank(store: Path, name: str, *, create: bool = False) -> Iterator[CaseBank]:
    """The bank `name` of `store`; unless `create`, both must exist already."""
    from memory.case_bank import CaseBank, known_banks
    from memory.store import open_store

    if not create and not store.exists():
        raise ConfigError(f"no memory store at {store}")
    conn = open_store(store)
    try:
        if not create and name not in (names := known_banks(conn)):
            has = f"it has {', '.join(map(repr, names))}" if names else "it holds no case bank"
            raise ConfigError(f"{store} has no case bank {name!r}; {has}")
        bank = CaseBank.open(conn, None, name)
        try:
            yield bank
        finally:
            bank.close()
    finally:
        conn.close()


def _preview(text: str, n: int) -> str:
    one = " ".join(text.split())
    return one if len(one) <= n else one[: n - 1] + "…"


@memory_app.command("ls")
def ls(
    store: StoreArg,
    bank: BankOpt = "default",
    label: Annotated[
        Literal["all", "success", "failure"], typer.Option(help="Only successes or failures.")
    ] = "all",
    limit: Annotated[int, typer.Option(help="Show at most this many cases (newest last).")] = 50,
) -> None:
    """List the cases of a bank: id, label, reward, created, task."""
    if limit < 1:
        raise ConfigError(f"--limit must be >= 1, got {limit}")
    want = None if label == "all" else label == "success"
    with _bank(store, bank) as b:
        total = asyncio.run(b.count(label=want))
        cases = asyncio.run(b.list(label=want, limit=limit, offset=max(0, total - limit)))
    table = Table(title=f"{store} · bank {bank!r} · {total} case(s)")
    for col in ("id", "label", "reward", "created (UTC)", "task"):
        table.add_column(col, no_wrap=col != "task", overflow="fold")
    for c in cases:
        mark = "[green]success[/]" if c.label else "[red]failure[/]"
        created = c.created.strftime("%Y-%m-%d %H:%M:%S")
        table.add_row(c.id, mark, f"{c.reward:.3f}", created, escape(_preview(c.task, 70)))
    out.print(table)
    if total > len(cases):
        out.print(f"... {total - len(cases)} older case(s) not shown (use --limit)")


@memory_app.command("show")
def show(
    store: StoreArg,
    case_id: Annotated[str, typer.Argument(help="The case's id (see `agentic memory ls`).")],
    bank: BankOpt = "default",
) -> None:
    """Print one case in full."""
    with _bank(store, bank) as b:
        case = asyncio.run(b.get(case_id))
    if case is None:
        raise ConfigError(f"bank {bank!r} of {store} has no case with id {case_id!r}")
    table = Table(title=f"case {case.id}", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    for field, value in case.model_dump(mode="json").items():
        table.add_row(field, escape(value if isinstance(value, str) else repr(value)))
    out.print(table)


@memory_app.command("rm")
def rm(
    store: StoreArg,
    case_ids: Annotated[list[str], typer.Argument(help="Ids of the cases to delete.")],
    bank: BankOpt = "default",
) -> None:
    """Delete cases by id. Nothing is deleted if any id is unknown."""
    with _bank(store, bank) as b:
        found = {c.id for c in asyncio.run(b.list(ids=case_ids))}
        missing = [i for i in case_ids if i not in found]
        if missing:
            raise ConfigError(f"bank {bank!r} of {store} has no case with id {missing[0]!r}")
        n = asyncio.run(b.delete(case_ids))
    out.print(f"deleted {n} case(s) from bank {bank!r}")


@memory_app.command("export")
def export(
    store: StoreArg,
    path: Annotated[Path, typer.Argument(help="The JSON file to write.")],
    bank: BankOpt = "default",
    overwrite: Annotated[bool, typer.Option(help="Replace an existing file.")] = False,
) -> None:
    """Write every case of a bank, with its vector, to a JSON file."""
    if path.exists() and not overwrite:
        raise ConfigError(f"{path} exists; pass --overwrite to replace it")
    with _bank(store, bank) as b:
        n = asyncio.run(b.export_json(path))
    out.print(f"exported {n} case(s) to {path}")


@memory_app.command("import")
def import_(
    store: StoreArg,
    path: Annotated[Path, typer.Argument(help="A file written by `agentic memory export`.")],
    bank: BankOpt = "default",
) -> None:
    """Add the cases of an exported file to a bank (creating the store and bank if needed);
    cases whose ids the bank holds already are skipped."""
    from memory.cases import read_export

    total = len(read_export(path).cases)  # a bad file is refused before the store is touched
    with _bank(store, bank, create=True) as b:
        n = asyncio.run(b.import_json(path))
    out.print(f"imported {n} of {total} case(s) into bank {bank!r} ({total - n} already there)")
