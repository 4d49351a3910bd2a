"""The library, one sub-package per kind of work, in the order data flows; each imports only those before it.

data -> model -> store -> stats -> walkthrough      (config: checks every package may use)
"""
