"""The edge of brandloop: the ``brandloop`` command line and the HTTP apps.

``apps`` imports :mod:`ner` and :mod:`flows`; neither of them imports ``apps``.
"""
