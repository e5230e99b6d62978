// Package compose holds the docker compose deployment of blockwire with Kong
// (docker-compose.yml, Dockerfile.kong, Dockerfile.blockwire; see README.md).
// It has no code: its test parses those files and checks that they are wired
// together, and to the code, as the documentation says, since no Docker
// engine runs where the tests run. It also checks that docs/OPERATIONS.md and
// docs/KONG.md name every serve flag, plugin setting and metric the code has.
package compose
