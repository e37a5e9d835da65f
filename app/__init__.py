"""The face: the command line, the servers (UI launcher, review page, resolution service) and the operator
commands (audit, publish, takedown, forget). It imports every floor below it; nothing imports it."""
