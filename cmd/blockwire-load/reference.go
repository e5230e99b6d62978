package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The reference's own stream, so measuring it leaves blockwire's incident
// stream untouched. Same storage and duplicate window as the incident stream.
const (
	refStream  = "BLOCKWIRE_LOADREF"
	refSubject = "blockwire.loadref"
	refDupes   = 10 * time.Minute
)

// The reference is split in two: the load generator (the parent) owns the
// stream — it creates it before the run and deletes it after, even when the
// handler died — while the handler runs in a child process (see
// refprocess.go). This file has both halves.

// refStore is the parent's handle on the reference stream.
type refStore struct {
	nc *nats.Conn
	js jetstream.JetStream
}

// openRefStore connects to natsURL and (re)creates the reference stream empty.
func openRefStore(ctx context.Context, natsURL string) (*refStore, error) {
	nc, err := nats.Connect(natsURL, nats.Name("blockwire-load reference stream"))
	if err != nil {
		return nil, fmt.Errorf("reference: connect to NATS at %s: %w (is serve's embedded NATS server listening? see -nats-url)", natsURL, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("reference: %w", err)
	}
	s := &refStore{nc: nc, js: js}
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	// A stream left over by an interrupted run is dropped, so every run starts empty.
	if err := js.DeleteStream(sctx, refStream); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
		nc.Close()
		return nil, fmt.Errorf("reference: delete leftover stream %s: %w", refStream, err)
	}
	if _, err := js.CreateStream(sctx, jetstream.StreamConfig{
		Name:       refStream,
		Subjects:   []string{refSubject},
		Storage:    jetstream.FileStorage,
		Duplicates: refDupes,
	}); err != nil {
		nc.Close()
		return nil, fmt.Errorf("reference: create stream %s: %w", refStream, err)
	}
	return s, nil
}

// Close deletes the reference stream and disconnects. It uses its own
// deadline, so it still cleans up after an interrupt. It returns how many
// messages the stream held, to check against the 202s.
func (s *refStore) Close() (stored uint64, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if st, ierr := s.js.Stream(ctx, refStream); ierr == nil {
		if info, ierr := st.Info(ctx); ierr == nil {
			stored = info.State.Msgs
		}
	}
	if derr := s.js.DeleteStream(ctx, refStream); derr != nil {
		err = fmt.Errorf("reference: delete stream %s: %w", refStream, derr)
	}
	s.nc.Close()
	return stored, err
}

// refHandler is "the most this machine gives": an HTTP handler that does only
// what the webhook cannot avoid — decode the JSON body, publish it to
// JetStream on the same NATS server and wait for the ack — and answers 202.
type refHandler struct {
	js jetstream.JetStream
}

type refAccepted struct {
	ID        any    `json:"id"`
	Seq       uint64 `json:"seq"`
	Duplicate bool   `json:"duplicate"`
}

func (h *refHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "use POST", http.StatusMethodNotAllowed)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
	if err != nil {
		http.Error(w, err.Error(), http.StatusRequestEntityTooLarge)
		return
	}
	var inc map[string]any
	if err := json.Unmarshal(body, &inc); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	sum := sha256.Sum256(body)
	msg := nats.NewMsg(refSubject)
	msg.Data = body
	msg.Header.Set(jetstream.MsgIDHeader, hex.EncodeToString(sum[:]))
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	ack, err := h.js.PublishMsg(ctx, msg)
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusAccepted)
	_ = json.NewEncoder(w).Encode(refAccepted{ID: inc["id"], Seq: ack.Sequence, Duplicate: ack.Duplicate})
}

// serveReference is the whole life of the child process (hidden flag
// -serve-reference): connect to natsURL, serve the reference handler on
// listen, print the bound address (host:port, one line) on stdout once it
// accepts connections, and serve until SIGINT/SIGTERM (ctx) or until stdin
// reaches EOF — the parent holds the other end of stdin, so even a parent
// killed with SIGKILL takes its child down with it. The stream must exist:
// the parent creates and deletes it. It returns the exit status.
func serveReference(ctx context.Context, natsURL, listen string, stdin io.Reader, stdout, stderr io.Writer) int {
	fail := func(err error) int {
		fmt.Fprintln(stderr, "blockwire-load -serve-reference:", err)
		return 1
	}
	nc, err := nats.Connect(natsURL, nats.Name("blockwire-load reference"))
	if err != nil {
		return fail(fmt.Errorf("connect to NATS at %s: %w", natsURL, err))
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fail(err)
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return fail(fmt.Errorf("listen on %s: %w", listen, err))
	}
	srv := &http.Server{Handler: &refHandler{js: js}, ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	if _, err := fmt.Fprintln(stdout, ln.Addr().String()); err != nil {
		_ = srv.Close()
		return fail(fmt.Errorf("report the address: %w", err))
	}
	eof := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, stdin)
		close(eof)
	}()
	select {
	case <-ctx.Done():
	case <-eof:
	case err := <-served:
		return fail(fmt.Errorf("serve: %w", err))
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx)
	return 0
}
