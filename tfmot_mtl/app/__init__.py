"""The applications built on the library: the command line (:mod:`~tfmot_mtl.app.cli`, with
:mod:`~tfmot_mtl.app.cli_compress`), the end-to-end demo (:mod:`~tfmot_mtl.app.demo`) and a
user's data fitted to a user's model (:mod:`~tfmot_mtl.app.model_data`). Nothing in the core
imports this package.
"""
