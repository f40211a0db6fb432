"""Running controllers over task suites and reading the results: `runner` (`run_suite`,
`RunResult`), `suites` (reasoning-gym and HumanEval task suites), `plot` (accuracy-vs-compute
curves from recordings)."""
