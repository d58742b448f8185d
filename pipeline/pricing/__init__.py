"""What answers cost: prices per model and the cost of a record (``cost``)."""
