"""brandloop's edge: the HTTP apps and the command line, on top of ``ner`` and ``flows``."""
