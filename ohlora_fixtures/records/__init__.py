"""The typed record and the results log: what one benchmark measured, its figures and how it is stored.

Torch-free by contract (setup.cfg, import-linter): re-rendering stored results never loads torch from here.
"""
