"""Environment variables the zdb commands read (shared by the CLI and by programs that start zdb processes)."""

#: the dba password of ``zdb serve`` / ``zdb replica`` when ``--dba-password`` is not given
DBA_PASSWORD_VARIABLE = "WORKBENCH_ZDB_DBA_PASSWORD"
