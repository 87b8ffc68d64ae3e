"""Model import: a file from the configured import directory, exported, registered, loaded.

`POST /api/inference/models/load` (engine_api/load_routes.py) is a thin door onto
`ModelImports` (service.py). The export runs in a child process (runner.py, which
starts `python -m exporters.file_import`): the serving package never imports the
exporters, unpickling stays out of its memory, and a stuck export can be killed.
"""
