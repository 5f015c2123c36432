"""tfmot_mtl."""
