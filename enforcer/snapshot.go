package enforcer

import (
	"bufio"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/blockwire/blockwire/schemas"
)

// The snapshot lets a Kong node that restarts while NATS is unreachable enforce what it knew.
// Layout: magic, a length-prefixed JSON header, records, an end byte, and a CRC-32 of all
// that. A record is the kind's index byte, then service, route, name and value (each a
// uvarint length and the bytes, as in a block key's parts) and the expiry (uvarint, Unix
// ms). A damaged or foreign file is ignored, never half-loaded.
const (
	snapshotMagic   = "BWSNAP1\n"
	snapshotVersion = 1
	snapshotEnd     = 0xFF
)

type snapshotHeader struct {
	Version   int    `json:"version"`
	Bucket    string `json:"bucket"`
	NATS      string `json:"nats"` // redacted
	WrittenAt int64  `json:"writtenAt"`
	Entries   int64  `json:"entries"`
}

var kindsByIndex = func() [nKinds]schemas.EntityType {
	var out [nKinds]schemas.EntityType
	for _, k := range schemas.EntityTypes() {
		out[kindIndex(k)] = k
	}
	return out
}()

// writeSnapshot writes the current index when it changed since the last write. Unless
// final, only an index that matches the bucket right now is written: a snapshot must not be
// replaced by an older state. At shutdown, any index that came from the bucket is newer than
// the file.
func (m *Mirror) writeSnapshot(final bool) {
	if m.cfg.snapshotPath == "" {
		return
	}
	// The version first: a swap (the first sync's) stores the index before it bumps the
	// version, so the index read next is at least that version's. Read the other way round,
	// the index a snapshot loaded could be written as the synced version and never replaced,
	// bringing back blocks that sync dropped at the next start without NATS.
	v := m.version.Load()
	if m.snapshotRace != nil {
		m.snapshotRace()
	}
	x := m.cur.Load()
	if x == nil || !m.everSynced.Load() || (!final && !m.synced.Load()) {
		return
	}
	if v == m.snapVersion.Load() {
		return
	}
	start := time.Now()
	hdr := snapshotHeader{Version: snapshotVersion, Bucket: m.cfg.loc.bucket, NATS: redactURL(m.cfg.loc.url),
		WrittenAt: start.UnixMilli(), Entries: x.entries()}
	n, err := writeSnapshotFile(m.cfg.snapshotPath, x, hdr)
	if err != nil {
		m.cfg.log.Error().Err(err).Str("path", m.cfg.snapshotPath).Msg("write snapshot")
		return
	}
	m.snapVersion.Store(v)
	m.snapshotAt.Store(hdr.WrittenAt)
	m.cfg.log.Info().Str("path", m.cfg.snapshotPath).Int("entries", n).Dur("took", time.Since(start)).Msg("snapshot written")
}

// writeSnapshotFile writes x atomically (temp file, fsync, rename, fsync of the directory)
// and returns the number of records.
func writeSnapshotFile(path string, x *index, hdr snapshotHeader) (int, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return 0, fmt.Errorf("create snapshot dir: %w", err)
	}
	f, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".tmp*")
	if err != nil {
		return 0, fmt.Errorf("create snapshot: %w", err)
	}
	defer func() { _ = os.Remove(f.Name()) }() // a no-op after the rename
	crc := crc32.NewIEEE()
	bw := bufio.NewWriterSize(io.MultiWriter(f, crc), 1<<20)
	n, err := encodeSnapshot(bw, x, hdr)
	if err == nil {
		err = bw.Flush()
	}
	if err == nil {
		_, err = f.Write(binary.LittleEndian.AppendUint32(nil, crc.Sum32()))
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err == nil {
		err = syncDir(filepath.Dir(path)) // the rename itself survives a crash
	}
	if err != nil {
		return 0, fmt.Errorf("write snapshot: %w", err)
	}
	return n, nil
}

// syncDir flushes a directory's entries to disk.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

func encodeSnapshot(w *bufio.Writer, x *index, hdr snapshotHeader) (int, error) {
	h, err := json.Marshal(hdr)
	if err != nil {
		return 0, err
	}
	var buf []byte
	buf = append(buf, snapshotMagic...)
	buf = binary.AppendUvarint(buf, uint64(len(h)))
	buf = append(buf, h...)
	if _, err := w.Write(buf); err != nil {
		return 0, err
	}
	names := *x.names.Load()
	n := 0
	put := func(kind schemas.EntityType, name, value string, r rule) {
		r.each(func(sc scopeKey, exp int64) {
			if exp <= hdr.WrittenAt {
				return
			}
			buf = append(buf[:0], byte(kindIndex(kind)))
			for _, s := range [4]string{sc.service, sc.route, name, value} {
				buf = binary.AppendUvarint(buf, uint64(len(s)))
				buf = append(buf, s...)
			}
			buf = binary.AppendUvarint(buf, uint64(exp))
			_, _ = w.Write(buf) // bufio keeps the first error for Flush
			n++
		})
	}
	x.addrs.each(func(k addrKey, r rule) { put(schemas.EntityIP, "", k.addr().String(), r) })
	for pfx, r := range x.ranges.Load().All() {
		put(schemas.EntityCIDR, "", pfx.String(), r)
	}
	x.hashed.each(func(k hashKey, r rule) {
		if int(k.ns) < len(names) {
			d := k.digest()
			put(names[k.ns].kind, names[k.ns].name, hex.EncodeToString(d[:]), r)
		}
	})
	x.plain.each(func(k strKey, r rule) {
		if int(k.ns) < len(names) {
			put(names[k.ns].kind, names[k.ns].name, k.v, r)
		}
	})
	return n, w.WriteByte(snapshotEnd)
}

// loadSnapshot serves the snapshot file, if there is a valid one for this bucket, until the
// bucket's state replaces it. Only the first call reads the file: Runtime.mirror loads it
// before the plugin answers, and run again for mirrors started without a Runtime.
func (m *Mirror) loadSnapshot() { m.snapOnce.Do(m.readSnapshot) }

func (m *Mirror) readSnapshot() {
	start := time.Now()
	wr, hdr, err := readSnapshotFile(m.cfg.snapshotPath, m.cfg.loc, start.UnixMilli())
	switch {
	case errors.Is(err, fs.ErrNotExist):
		m.cfg.log.Info().Str("path", m.cfg.snapshotPath).Msg("no snapshot yet")
		return
	case err != nil:
		m.cfg.log.Warn().Err(err).Str("path", m.cfg.snapshotPath).Msg("snapshot ignored")
		return
	}
	if m.cur.CompareAndSwap(nil, wr.idx) {
		m.knownAt.Store(hdr.WrittenAt)
		m.snapshotAt.Store(hdr.WrittenAt)
		m.lastChange.Store(hdr.WrittenAt)
	}
	m.cfg.log.Info().Str("path", m.cfg.snapshotPath).Int64("entries", wr.idx.entries()).
		Time("written_at", time.UnixMilli(hdr.WrittenAt)).Dur("took", time.Since(start)).
		Msg("enforcing the snapshot until the bucket is synced")
}

var errBadSnapshot = errors.New("bad snapshot")

// readSnapshotFile builds an index from a snapshot of the bucket at loc, leaving out what
// expired by now.
func readSnapshotFile(path string, loc location, now int64) (*writer, snapshotHeader, error) {
	var hdr snapshotHeader
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, hdr, err
	}
	if len(data) < len(snapshotMagic)+5 || string(data[:len(snapshotMagic)]) != snapshotMagic {
		return nil, hdr, fmt.Errorf("%w: not a snapshot file", errBadSnapshot)
	}
	body, sum := data[:len(data)-4], binary.LittleEndian.Uint32(data[len(data)-4:])
	if crc32.ChecksumIEEE(body) != sum {
		return nil, hdr, fmt.Errorf("%w: checksum mismatch (truncated or damaged)", errBadSnapshot)
	}
	d := snapDecoder{b: body[len(snapshotMagic):]}
	if err := json.Unmarshal(d.bytes(), &hdr); err != nil || d.err != nil {
		return nil, hdr, fmt.Errorf("%w: header: %w", errBadSnapshot, errors.Join(err, d.err))
	}
	// The bucket must match; the URL may not (a reordered server list, a renamed host).
	if hdr.Version != snapshotVersion || hdr.Bucket != loc.bucket {
		return nil, hdr, fmt.Errorf("%w: version %d of bucket %q, want version %d of %q",
			errBadSnapshot, hdr.Version, hdr.Bucket, snapshotVersion, loc.bucket)
	}
	wr := newWriter()
	ops := make([]op, 0, maxBatch)
	for {
		k, ok := d.byte()
		if !ok || k == snapshotEnd {
			break
		}
		if int(k) >= nKinds {
			return nil, hdr, fmt.Errorf("%w: kind %d", errBadSnapshot, k)
		}
		o := op{parts: schemas.KeyParts{Kind: kindsByIndex[k], Service: d.str(), Route: d.str(), Name: d.str(), Value: d.str()}}
		o.exp = int64(d.uvarint())
		ops = append(ops, o)
		if len(ops) == cap(ops) {
			_ = wr.apply(ops, now) // what cannot be indexed now could not be then either
			ops = ops[:0]
		}
	}
	if d.err != nil {
		return nil, hdr, fmt.Errorf("%w: %w", errBadSnapshot, d.err)
	}
	_ = wr.apply(ops, now)
	wr.published() // built: ready to be swapped in
	return wr, hdr, nil
}

// snapDecoder reads the snapshot's varint-framed fields, keeping the first error.
type snapDecoder struct {
	b   []byte
	err error
}

var errShort = errors.New("unexpected end of data")

func (d *snapDecoder) byte() (byte, bool) {
	if len(d.b) == 0 {
		d.err = errShort
		return 0, false
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c, true
}

func (d *snapDecoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = errShort
		d.b = nil
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *snapDecoder) bytes() []byte {
	n := d.uvarint()
	if n > uint64(len(d.b)) {
		d.err = errShort
		d.b = nil
		return nil
	}
	out := d.b[:n]
	d.b = d.b[n:]
	return out
}

func (d *snapDecoder) str() string { return string(d.bytes()) }
