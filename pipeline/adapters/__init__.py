"""Ways into the pipeline besides ``pipeline.run``: a plan of a job's tokens and cost before
anything is sent (``estimate``), and one call without a pipeline (``standalone``)."""
