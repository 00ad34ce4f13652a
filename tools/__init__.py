"""The ``cfs`` command line and operations tools."""
