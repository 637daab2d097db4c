"""PostgreSQL: SQL operations, WAL file and LSN arithmetic, finding programs and building their arguments, local instances and node control."""
