"""Controllers by name: `registry` (the `Spec` base class, `BuildContext`,
`parse_controller_spec`, the `agentic.controllers` entry points) and the built-in specs:
`searches` (`direct` and the test-time searches) and `pipeline` (the other controllers, which
nest). They live on the top floor because `search/` and `controllers/` may not import
`agentic`."""
