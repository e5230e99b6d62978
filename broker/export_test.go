package broker

// CheckServerVersion exposes the version gate to tests: no old server is at hand to connect to.
var CheckServerVersion = checkServerVersion
