package main

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net/netip"
	"strconv"
)

// The incident bodies sent to both targets. Every request carries its own
// incident id (so neither JetStream stream sees a duplicate) and its own
// addresses, taken from 198.18.0.0/15, the range RFC 2544 reserves for
// benchmarking, so a load test never blocks a real client.

type entity struct {
	Type  string `json:"type"`
	Name  string `json:"name,omitempty"`
	Value string `json:"value"`
}

type incident struct {
	ID              string   `json:"id"`
	Type            string   `json:"type"`
	Title           string   `json:"title"`
	Severity        string   `json:"severity"`
	Entities        []entity `json:"entities"`
	DurationSeconds int      `json:"durationSeconds"`
}

var benchNet = netip.MustParsePrefix("198.18.0.0/15")

// benchIP is the i-th address of 198.18.0.0/15, wrapping around after 131072.
func benchIP(i int) string {
	b := benchNet.Addr().As4()
	size := 1 << (32 - benchNet.Bits())
	n := binary.BigEndian.Uint32(b[:]) + uint32(i%size)
	binary.BigEndian.PutUint32(b[:], n)
	return netip.AddrFrom4(b).String()
}

// entitiesFor returns k valid entities for request seq: an IP first, then a
// header, then a rotation of IP, cookie, query and consumer entities.
func entitiesFor(seq, k int) []entity {
	es := make([]entity, 0, k)
	for j := range k {
		switch {
		case j == 0:
			es = append(es, entity{Type: "ip", Value: benchIP(seq*k + j)})
		case j == 1:
			es = append(es, entity{Type: "header", Name: "X-Api-Key", Value: "k-" + strconv.Itoa(seq)})
		default:
			switch (j - 2) % 4 {
			case 0:
				es = append(es, entity{Type: "ip", Value: benchIP(seq*k + j)})
			case 1:
				es = append(es, entity{Type: "cookie", Name: "session", Value: fmt.Sprintf("s-%d-%d", seq, j)})
			case 2:
				es = append(es, entity{Type: "query", Name: "api_key", Value: fmt.Sprintf("q-%d-%d", seq, j)})
			case 3:
				es = append(es, entity{Type: "consumer", Value: fmt.Sprintf("consumer-%d-%d", seq, j)})
			}
		}
	}
	return es
}

// incidentBodies returns n JSON incident bodies whose ids start with prefix
// and are distinct from each other (prefix must make them distinct from any
// other batch). They are built before the timed run, so building them costs
// the run nothing.
func incidentBodies(prefix string, n, entities int) [][]byte {
	bodies := make([][]byte, n)
	for i := range n {
		b, err := json.Marshal(incident{
			ID:              fmt.Sprintf("%s-%07d", prefix, i),
			Type:            "block",
			Title:           "Credential stuffing (blockwire-load)",
			Severity:        "high",
			Entities:        entitiesFor(i, entities),
			DurationSeconds: 3600,
		})
		if err != nil {
			panic(err) // cannot happen: plain strings and ints
		}
		bodies[i] = b
	}
	return bodies
}
