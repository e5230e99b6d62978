// Package cluster holds the 3-node NATS cluster scenario (issue 7, scenario 5): three embedded
// JetStream servers on loopback with the incident stream, the audit and dead-letter streams and
// the blocks bucket at three replicas; two serve replicas (webhook and consumer in this process,
// each connected to a different node) and two Kong plugin processes (the real binary, driven as
// Kong would, BLOCKWIRE_NATS_URL listing all three nodes). The incident stream's leader is shut
// down in the middle of a burst of incidents; the node carries a serve replica's connection, one
// plugin's connection and the other plugin's watch consumer. The test asserts that every
// incident answered 202 is stored, applied and audited once, that both consumers consume after
// the failover, and that both plugins enforce a block made after it and the ones made before.
// What it measured (recovery times, counts) is logged at the end.
//
//	go test -race -run TestLeaderLossMidBurst -v ./internal/cluster                                   # compact: 2,000 incidents
//	BLOCKWIRE_SOAK=1 go test -race -timeout 30m -run TestLeaderLossMidBurst -v ./internal/cluster     # 20,000, two failovers
//
// BLOCKWIRE_ENFORCER_WATCH_CHECK, when set in the test's environment, is passed on to both
// plugins (and noted in the figures): the plugin's watch-stall check, default 1s, resumes a
// watch whose consumer died with its node. BLOCKWIRE_ENFORCER_WATCH_CHECK=1h all but switches
// it off and reproduces the figure from before it (the plugin whose watch was on the killed
// node refuses the new block only after nats.go's heartbeats give up on it, 11–16 s):
//
//	BLOCKWIRE_ENFORCER_WATCH_CHECK=1h go test -race -run TestLeaderLossMidBurst -v ./internal/cluster
//
// BLOCKWIRE_CLUSTER_LOG=1 streams the servers' warnings and the replicas' logs as they happen.
// Everything lives in the tests; this file only documents the package.
package cluster
