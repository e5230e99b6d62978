package enforcer

import (
	"strings"
	"testing"
)

// Credentials in nats_url never reach an error, a log line or a metric label, even when a
// password holds a comma, which nats.go takes for a server separator.
func TestNATSURLCredentials(t *testing.T) {
	for _, tt := range []struct {
		name, list string
		secrets    []string // none may appear in the redacted list or the error
		redacted   string
		valid      bool
	}{
		{"no credentials", "nats://a:4222, tls://b:4222", nil, "nats://a:4222,tls://b:4222", true},
		{"password", "nats://alice:pw@a:4222", []string{"alice", "pw"}, "nats://a:4222", true},
		{"token, no scheme", "t0ken@a:4222", []string{"t0ken"}, "a:4222", true},
		{"password with an @", "nats://alice:p@ss@a:4222", []string{"alice", "p@ss"}, "nats://a:4222", true},
		{"every server", "nats://alice:pw@a:4222,tls://alice:pw@b:4222", []string{"alice", "pw"}, "nats://a:4222,tls://b:4222", true},
		// A comma in the password: nats.go sees "nats://alice:s3c" (invalid port) and
		// "r3t@nats.internal:4222".
		{"password with a comma", "nats://alice:s3c,r3t@nats.internal:4222", []string{"alice", "s3c", "r3t"}, "nats://[redacted],nats.internal:4222", false},
		// Here both halves are valid servers: "nats://alice:1234" and "5678@host".
		{"numeric password with a comma", "nats://alice:1234,5678@host", []string{"alice", "1234", "5678"}, "nats://[redacted],host", true},
		{"unescaped slash", "nats://alice:s3c/r3t@a:4222", []string{"alice", "s3c", "r3t"}, "nats://a:4222", false},
		{"bad scheme with credentials", "alice://pw@a:4222", []string{"alice", "pw"}, "a:4222", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := checkNATSURL(tt.list)
			if (err == nil) != tt.valid {
				t.Errorf("checkNATSURL(%q) = %v, want valid=%v", tt.list, err, tt.valid)
			}
			got := redactURL(tt.list)
			if got != tt.redacted {
				t.Errorf("redactURL(%q) = %q, want %q", tt.list, got, tt.redacted)
			}
			for _, s := range tt.secrets {
				if strings.Contains(got, s) {
					t.Errorf("redactURL(%q) = %q: holds %q", tt.list, got, s)
				}
				if err != nil && strings.Contains(err.Error(), s) {
					t.Errorf("checkNATSURL(%q): %q holds %q", tt.list, err, s)
				}
			}
			// What the plugin logs and answers for an instance with this URL.
			if _, err := (envDefaults{}).resolve(&Config{NATSURL: tt.list}); err != nil {
				for _, s := range tt.secrets {
					if strings.Contains(err.Error(), s) {
						t.Errorf("resolve: %q holds %q", err, s)
					}
				}
			}
		})
	}
}
