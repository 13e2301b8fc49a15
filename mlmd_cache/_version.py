"""mlmd-cache's version: ``mlmd_cache.__version__`` (setup.cfg reads it here), in a base module of its
own so that what depends on it (the parsed-pipeline cache's key) need not import the package's
public API above every layer."""

__version__ = "0.1.0"
