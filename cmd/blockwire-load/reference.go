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

// reference is "the most this machine gives": an HTTP handler that does only
// what the webhook cannot avoid — decode the JSON body, publish it to
// JetStream on the same NATS server and wait for the ack — and answers 202.
type reference struct {
	nc  *nats.Conn
	js  jetstream.JetStream
	srv *http.Server
	ln  net.Listener
}

type refAccepted struct {
	ID        any    `json:"id"`
	Seq       uint64 `json:"seq"`
	Duplicate bool   `json:"duplicate"`
}

// startReference connects to natsURL, (re)creates the reference stream and
// serves the reference handler on a random loopback port.
func startReference(ctx context.Context, natsURL string) (*reference, error) {
	nc, err := nats.Connect(natsURL, nats.Name("blockwire-load reference"))
	if err != nil {
		return nil, fmt.Errorf("reference: connect to NATS at %s: %w (is serve's embedded NATS server listening? see -nats-url)", natsURL, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("reference: %w", err)
	}
	ref := &reference{nc: nc, js: js}
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
	ref.ln, err = net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		ref.deleteStream()
		nc.Close()
		return nil, fmt.Errorf("reference: listen: %w", err)
	}
	ref.srv = &http.Server{Handler: ref, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = ref.srv.Serve(ref.ln) }()
	return ref, nil
}

// URL is where the reference takes incidents.
func (ref *reference) URL() string { return "http://" + ref.ln.Addr().String() + "/v1/incidents" }

func (ref *reference) ServeHTTP(w http.ResponseWriter, r *http.Request) {
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
	ack, err := ref.js.PublishMsg(ctx, msg)
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusAccepted)
	_ = json.NewEncoder(w).Encode(refAccepted{ID: inc["id"], Seq: ack.Sequence, Duplicate: ack.Duplicate})
}

func (ref *reference) deleteStream() error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := ref.js.DeleteStream(ctx, refStream); err != nil {
		return fmt.Errorf("reference: delete stream %s: %w", refStream, err)
	}
	return nil
}

// Close stops the handler, deletes the reference stream and disconnects. It
// uses its own deadline, so it still cleans up after an interrupt.
// It returns how many messages the stream held, to check against the 202s.
func (ref *reference) Close() (stored uint64, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = ref.srv.Shutdown(ctx)
	if st, ierr := ref.js.Stream(ctx, refStream); ierr == nil {
		if info, ierr := st.Info(ctx); ierr == nil {
			stored = info.State.Msgs
		}
	}
	err = ref.deleteStream()
	ref.nc.Close()
	return stored, err
}
