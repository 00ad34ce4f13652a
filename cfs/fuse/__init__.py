"""The FUSE edge: the only package that imports pyfuse3.

``lowlevel`` comes first: its C extension must be in the process's global symbol scope
before pyfuse3 binds its calls into libfuse (see there).
"""

from cfs.fuse import lowlevel as lowlevel
