"""DR drills: the procedures and their evidence."""
