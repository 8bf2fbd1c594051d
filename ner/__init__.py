"""brandloop's library: every step of the brand-NER loop, free of orchestration.

Modules are named for what they own (``sources``, ``inference``, ``labelstudio``,
``evaluation``, ``training``, ``registry`` ...). Nothing here imports Prefect; the flows in
``flows/`` compose these functions.
"""

__version__ = "0.1.0"
