"""ml_collections configs, one file per experiment (`--config=configs/<file>.py[:arg]`)."""
