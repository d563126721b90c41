"""`hlm eval`, `generate`, `infill`, `export`, `report`: evaluation-side commands."""


def add_commands(sub):
    pass
