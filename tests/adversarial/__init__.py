"""The adversarial suite: strangers, floods, fuzzing and full disks against every server (WORKBENCH_FUZZ=quick|nightly|N)."""
