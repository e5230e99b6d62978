package webhook

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/blockwire/blockwire/schemas"
)

// ClientConfig configures a Client of a running serve's API.
type ClientConfig struct {
	// URL of the API. Default "http://127.0.0.1:8080".
	URL string
	// Token is sent as a bearer token when set.
	Token string
	// HMACSecret signs each request when set.
	HMACSecret string
	// HTTP is the client to use. Default: one with a 30s timeout.
	HTTP *http.Client
}

// Client talks to blockwire's HTTP API: the CLI's one way to act, so manual
// actions are authenticated, validated and logged exactly like incidents.
type Client struct {
	base   *url.URL
	cfg    ClientConfig
	client *http.Client
}

// ProblemError is an error answer of the API.
type ProblemError struct {
	Status     int
	Title      string
	Detail     string
	Violations []schemas.Violation
}

func (e *ProblemError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d %s", e.Status, e.Title)
	if e.Detail != "" {
		b.WriteString(": " + e.Detail)
	}
	for _, v := range e.Violations {
		fmt.Fprintf(&b, "\n  %s: %s", v.Path, v.Message)
	}
	return b.String()
}

// NewClient validates cfg and returns a Client.
func NewClient(cfg ClientConfig) (*Client, error) {
	if cfg.URL == "" {
		cfg.URL = "http://127.0.0.1:8080"
	}
	u, err := url.Parse(cfg.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("configure api client: %q is not an http(s) URL", cfg.URL)
	}
	if cfg.HTTP == nil {
		cfg.HTTP = &http.Client{Timeout: 30 * time.Second}
	}
	return &Client{base: u, cfg: cfg, client: cfg.HTTP}, nil
}

// Block asks for a manual block.
func (c *Client) Block(ctx context.Context, req BlockRequest) (*ManualAccepted, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("encode block request: %w", err)
	}
	var out ManualAccepted
	return &out, c.do(ctx, http.MethodPost, "/v1/blocks", nil, body, http.StatusAccepted, &out)
}

// Unblock lifts the block stored under key.
func (c *Client) Unblock(ctx context.Context, key, actor string) (*ManualAccepted, error) {
	q := url.Values{}
	if actor != "" {
		q.Set("actor", actor)
	}
	var out ManualAccepted
	return &out, c.do(ctx, http.MethodDelete, "/v1/blocks/"+url.PathEscape(key), q, nil, http.StatusAccepted, &out)
}

// Blocks lists up to limit active blocks of a kind ("" for all).
func (c *Client) Blocks(ctx context.Context, kind schemas.EntityType, limit int) (*BlockList, error) {
	q := url.Values{}
	if kind != "" {
		q.Set("kind", string(kind))
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var out BlockList
	return &out, c.do(ctx, http.MethodGet, "/v1/blocks", q, nil, http.StatusOK, &out)
}

func (c *Client) do(ctx context.Context, method, path string, q url.Values, body []byte, want int, out any) error {
	u := c.base.JoinPath(path)
	u.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, method, u.String(), bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("build request: %w", err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.cfg.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.cfg.Token)
	}
	if c.cfg.HMACSecret != "" {
		ts := strconv.FormatInt(time.Now().Unix(), 10)
		req.Header.Set(HeaderTimestamp, ts)
		mac := SignRequest([]byte(c.cfg.HMACSecret), ts, method, req.URL.RequestURI(), body)
		req.Header.Set(HeaderSignature, "sha256="+hex.EncodeToString(mac))
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, c.base.Redacted(), err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("read answer: %w", err)
	}
	if resp.StatusCode != want {
		var p problem
		if json.Unmarshal(data, &p) != nil || p.Status == 0 {
			return &ProblemError{Status: resp.StatusCode, Title: http.StatusText(resp.StatusCode), Detail: strings.TrimSpace(string(data))}
		}
		return &ProblemError{Status: p.Status, Title: p.Title, Detail: p.Detail, Violations: p.Violations}
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("decode answer: %w", err)
	}
	return nil
}
