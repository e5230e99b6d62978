package enforcer

import (
	"crypto/sha256"
	"encoding/binary"
	"flag"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/blockwire/blockwire/schemas"
)

// benchBlocks is the size of the index the match benchmarks run against. It is built once per
// test process (about a second for a million blocks), so `-benchtime 1x` stays quick.
var benchBlocks = flag.Int("enforcer.blocks", 1_000_000, "blocks in the index of the match benchmarks")

// benchIndex holds benchBlocks active blocks: 40% IPv4 and 10% IPv6 addresses, 10% ranges,
// 20% header values over four header names, 10% cookie values, 10% JWT sub claims.
var benchIndex struct {
	once sync.Once
	w    *writer
	took time.Duration
}

func benchAddr4(i int) netip.Addr {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], 0x0b000000+uint32(i)) // 11.0.0.0 onwards
	return netip.AddrFrom4(b)
}

func benchAddr6(i int) netip.Addr {
	var b [16]byte
	b[0], b[1], b[2], b[3] = 0x20, 0x01, 0x0d, 0xb8
	binary.BigEndian.PutUint64(b[8:], uint64(i))
	return netip.AddrFrom16(b)
}

// benchRange4 is the i-th blocked /24, in 100.0.0.0/8 onwards.
func benchRange4(i int) netip.Prefix {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], 0x64000000+uint32(i)<<8)
	return netip.PrefixFrom(netip.AddrFrom4(b), 24)
}

var benchHeaderNames = []string{"x-api-key", "x-client-id", "x-device-id", "x-session"}

func loadBenchIndex(tb testing.TB) *writer {
	tb.Helper()
	benchIndex.once.Do(func() {
		n := *benchBlocks
		start := time.Now()
		w := newWriter()
		exp := time.Now().Add(24 * time.Hour).UnixMilli()
		ops := make([]op, 0, maxBatch)
		flush := func() {
			if err := w.apply(ops, time.Now().UnixMilli()); err != nil {
				panic(err)
			}
			ops = ops[:0]
		}
		add := func(p schemas.KeyParts) {
			ops = append(ops, op{parts: p, exp: exp})
			if len(ops) == cap(ops) {
				flush()
			}
		}
		for i := range n * 4 / 10 {
			add(schemas.KeyParts{Kind: "ip", Value: benchAddr4(i).String()})
		}
		for i := range n / 10 {
			add(schemas.KeyParts{Kind: "ip", Value: benchAddr6(i).String()})
		}
		for i := range n / 10 {
			add(schemas.KeyParts{Kind: "cidr", Value: benchRange4(i).String()})
		}
		for i := range n * 2 / 10 {
			add(schemas.KeyParts{Kind: "header", Name: benchHeaderNames[i%4], Value: sha(fmt.Sprint("key-", i))})
		}
		for i := range n / 10 {
			add(schemas.KeyParts{Kind: "cookie", Name: "session_id", Value: sha(fmt.Sprint("sess-", i))})
		}
		for i := range n - n*9/10 {
			add(schemas.KeyParts{Kind: "jwt", Name: "sub", Value: fmt.Sprint("user-", i)})
		}
		flush()
		w.published()
		benchIndex.w, benchIndex.took = w, time.Since(start)
	})
	return benchIndex.w
}

// BenchmarkMatch measures the in-memory part of a request: the lookups, given what the PDK
// returned. Each sub-benchmark cycles through 4096 inputs, half of them blocked.
func BenchmarkMatch(b *testing.B) {
	w := loadBenchIndex(b)
	b.Logf("index: %d blocks, built in %s", w.idx.entries(), benchIndex.took)
	now := time.Now().UnixMilli()
	m := matcher{x: w.idx, p: w.idx.plan.Load(), now: now}
	n := *benchBlocks
	const inputs = 4096
	spread := func(i, limit int) int { return (i * 7919) % max(limit, 1) } // hits spread over the whole index

	addrs := make([]netip.Addr, inputs)
	ranges := make([]netip.Addr, inputs)
	headers := make([]string, inputs)
	cookies := make([]string, inputs)
	tokens := make([]string, inputs)
	for i := range inputs {
		hit := i%2 == 0
		if hit {
			addrs[i] = benchAddr4(spread(i, n*4/10))
			ranges[i] = benchRange4(spread(i, n/10)).Addr().Next()
			headers[i] = fmt.Sprint("key-", 4*spread(i, n*2/10/4)) // under x-api-key
			cookies[i] = fmt.Sprintf("theme=dark; session_id=sess-%d; lang=en", spread(i, n/10))
			tokens[i] = jwtToken(b, fmt.Sprintf(`{"iss":"https://idp.example","sub":"user-%d","aud":"api","iat":1700000000,"exp":1900000000,"scope":"read write"}`, spread(i, n/10)))
		} else {
			addrs[i] = netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)})
			ranges[i] = netip.AddrFrom4([4]byte{198, 19, byte(i >> 8), byte(i)})
			headers[i] = fmt.Sprint("other-key-", i)
			cookies[i] = fmt.Sprintf("theme=dark; session_id=fresh-%d; lang=en", i)
			tokens[i] = jwtToken(b, fmt.Sprintf(`{"iss":"https://idp.example","sub":"someone-%d","aud":"api","iat":1700000000,"exp":1900000000,"scope":"read write"}`, i))
		}
	}
	nsHeader := m.p.headers[0].id
	for _, h := range m.p.headers {
		if h.name == "x-api-key" {
			nsHeader = h.id
		}
	}
	run := func(name string, fn func(i int) bool) {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			blocked := 0
			i := 0
			for b.Loop() {
				if fn(i & (inputs - 1)) {
					blocked++
				}
				i++
			}
			if blocked == 0 || blocked == i && i > 1 {
				b.Fatalf("%d of %d blocked: the inputs do not mix hits and misses", blocked, i)
			}
		})
	}
	digests := make([][32]byte, inputs)
	for i, h := range headers {
		digests[i] = sha256.Sum256([]byte(h))
	}
	// address: exact addresses, then ranges for the misses (what an IP-only request costs).
	// header: from the raw value: its SHA-256 (from the digest cache: clients repeat their
	// values) and the lookup. header-digest: the lookup alone, given the SHA-256.
	run("address", func(i int) bool { _, ok := m.matchAddr(addrs[i]); return ok })
	run("range", func(i int) bool { _, ok := m.matchAddr(ranges[i]); return ok })
	run("header", func(i int) bool { return m.matchHash(nsHeader, headers[i], schemas.EntityHeader) })
	run("header-digest", func(i int) bool {
		k := makeHashKey(nsHeader, &digests[i])
		r, ok := m.x.hashed.get(k, hashKeyHash(k))
		return ok && r.blocks(now)
	})
	run("cookie", func(i int) bool { return m.matchCookies(cookies[i]) })
	run("jwt-claim", func(i int) bool { return m.matchToken(tokens[i]) })
}

// BenchmarkSHA256 is what a header value the digest cache has not seen costs on top of the
// lookup: one SHA-256 of a short value.
func BenchmarkSHA256(b *testing.B) {
	v := []byte("k-0123456789abcdef")
	var d [32]byte
	for b.Loop() {
		d = sha256.Sum256(v)
	}
	_ = d
}

// BenchmarkApply measures one live change to the index holding benchBlocks blocks: the
// copy-on-write cost a new block pays before requests see it.
func BenchmarkApply(b *testing.B) {
	w := loadBenchIndex(b)
	exp := time.Now().Add(time.Hour).UnixMilli()
	ops := []op{{parts: schemas.KeyParts{Kind: "ip"}, exp: exp}}
	i := 0
	b.ReportAllocs()
	for b.Loop() {
		ops[0].parts.Value = netip.AddrFrom4([4]byte{172, 16 + byte(i>>16&15), byte(i >> 8), byte(i)}).String()
		ops[0].del = i&1 == 1 // add then remove, so the index stays the same size
		if err := w.apply(ops, time.Now().UnixMilli()); err != nil {
			b.Fatal(err)
		}
		if !ops[0].del {
			continue
		}
		i++
	}
}
