"""Taking backups: logical dumps and the physical chain, their verification and their copy in the other region."""
