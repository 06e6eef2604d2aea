"""The model files that ship inside the package (package data); inference/model_files.py picks one."""
