"""A deployment as data: its record, the changes that operations make to it, and its status (no Ray, no clock)."""
