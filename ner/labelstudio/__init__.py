"""Label Studio, one module per concern.

* :mod:`~ner.labelstudio.config`: the labelling config, built and read with the SDK's
  ``LabelInterface`` (``from_name`` / ``to_name`` / text field of any project);
* :mod:`~ner.labelstudio.export`: export JSON as pydantic models, parsing into annotations,
  writing annotations as an export, and the offset guard;
* :mod:`~ner.labelstudio.checkpoint`: what was pulled up to where (pure);
* :mod:`~ner.labelstudio.client`: the SDK calls (projects, tasks, import, export, webhooks);
* :mod:`~ner.labelstudio.exchange`: storage <-> Label Studio (import files, idempotent
  imports, snapshots, collected annotations);
* :mod:`~ner.labelstudio.triggers`: the gate on new labels (webhook events, polling).
"""
