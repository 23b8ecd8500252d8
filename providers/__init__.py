"""Provider plugins: the contract, the registry and one module per cloud."""
