"""The inletsctl CLI: thin commands, orchestration, host state, download."""
