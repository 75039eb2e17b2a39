package auditlog

import (
	"fmt"
	"net/url"
	"strings"
	"time"
)

// Modes.
const (
	// ModeStrict: Append returns only after the event is fsynced (group commit). Default.
	ModeStrict = "strict"
	// ModeAsync: Append enqueues into a bounded buffer; the writer spills it to the segment
	// files and fsyncs every AsyncFsyncInterval. A full buffer drops the event, counted and alarmed.
	ModeAsync = "async"
)

// Config is the `decision_log:` section of the sidecar configuration (docs/decision-log.md).
type Config struct {
	// Mode is strict (default) or async.
	Mode string `yaml:"mode" json:"mode"`
	// Dir holds the segment files, checkpoints.jsonl and upload cursors. `consentry run`
	// defaults it to var/decisions.
	Dir string `yaml:"dir" json:"dir"`
	// SegmentMaxBytes rotates the active segment once it reaches this size. Default 64 MiB.
	SegmentMaxBytes int64 `yaml:"segment_max_bytes" json:"segment_max_bytes"`
	// PreallocateBytes is how much zero-filled space the writer keeps written ahead of the end
	// of the active segment. A commit then overwrites blocks the file system has already
	// allocated, and its flush (fdatasync) writes only the data, without committing the file
	// system's journal for the file's new size: on ext4 that halves a commit's latency and
	// removes the journal's occasional multi-millisecond stalls (BENCHMARKS.md, round 6). The
	// writer extends the space after a commit once less than half of it is left, so one commit
	// in every PreallocateBytes/2 of log waits for the extension (~1 ms for 1 MiB). The active
	// segment therefore ends in NUL bytes until it is closed; readers stop at the first one,
	// and closed segments are trimmed to their records. Default 1 MiB; -1 appends instead.
	PreallocateBytes int64 `yaml:"preallocate_bytes" json:"preallocate_bytes"`
	// SegmentMaxAge rotates the active segment once it is this old. Default 24h.
	SegmentMaxAge time.Duration `yaml:"segment_max_age" json:"segment_max_age"`
	// RetainSegments keeps at most this many closed segments (0 = keep all). Removal is recorded
	// in the chain (a "retention" record) so the verifier can tell retention from deletion.
	RetainSegments int `yaml:"retain_segments" json:"retain_segments"`
	// RetainAge removes closed segments whose newest event is older than this (0 = keep).
	RetainAge time.Duration `yaml:"retain_age" json:"retain_age"`
	// CheckpointEvery writes a signed checkpoint after this many records. Default 1000.
	CheckpointEvery int `yaml:"checkpoint_every" json:"checkpoint_every"`
	// CheckpointInterval writes a signed checkpoint at least this often, even with no events,
	// so that a gap in time shows. Default 10s.
	CheckpointInterval time.Duration `yaml:"checkpoint_interval" json:"checkpoint_interval"`
	// SigningKeyFile is a PEM PKCS#8 Ed25519 private key used to sign checkpoints.
	SigningKeyFile string `yaml:"signing_key_file" json:"signing_key_file"`
	// SigningVaultKey is the name of a Vault transit key of type ed25519 in vault.transit_mount,
	// e.g. "decision-log-signing" (the bare name, not a path), that signs checkpoints instead of
	// a key file; it needs the vault section. Keep it outside the customer keys' prefix:
	// deploy/vault/consentry.hcl grants read and sign on it, never delete. The caller passes
	// the signer (vaultsign.New) in Options.Signer.
	SigningVaultKey string `yaml:"signing_vault_key" json:"signing_vault_key"`
	// UnsignedCheckpoints must be set explicitly to run without a signing key (development).
	UnsignedCheckpoints bool `yaml:"unsigned_checkpoints" json:"unsigned_checkpoints"`
	// PseudonymKeyFile holds the HMAC key for customer pseudonyms (>= 32 bytes: raw, hex or
	// base64): raw customer ids never reach the log. When unset, `consentry run` generates one
	// in <dir>.keys/pseudonym.key and keeps it there; back it up with the log.
	PseudonymKeyFile string `yaml:"pseudonym_key_file" json:"pseudonym_key_file"`
	// MaxBatch bounds one group commit. Default 4096 events.
	MaxBatch int `yaml:"max_batch" json:"max_batch"`
	// QueueSize bounds appends waiting for the writer (strict: callers block; async: the
	// buffer that drops when full). Default 65536.
	QueueSize int `yaml:"queue_size" json:"queue_size"`
	// AsyncFsyncInterval is how often the async writer fsyncs. Default 1s.
	AsyncFsyncInterval time.Duration `yaml:"async_fsync_interval" json:"async_fsync_interval"`
	// Mask lists mask rules applied to every event (see MaskRule).
	Mask []MaskRule `yaml:"mask" json:"mask"`
	// DropHeaders are request headers removed from the logged input in addition to the
	// built-in credential headers (authorization, proxy-authorization, cookie, set-cookie, x-api-key).
	DropHeaders []string `yaml:"drop_headers" json:"drop_headers"`
	// DropQuery are query parameters removed in addition to the built-in credential names
	// (access_token, id_token, token, api_key, apikey, password, secret).
	DropQuery []string `yaml:"drop_query" json:"drop_query"`
	// Stdout copies every committed record to standard output as JSON lines.
	Stdout bool `yaml:"stdout" json:"stdout"`
	// Upload configures HTTP upload to an OPA-compatible decision-log service.
	Upload *UploadConfig `yaml:"upload" json:"upload"`
}

// UploadConfig is `decision_log.upload`.
type UploadConfig struct {
	// URL receives POSTs of gzip-compressed JSON arrays of events (OPA decision-log API).
	URL string `yaml:"url" json:"url"`
	// BearerTokenFile, when set, is sent as Authorization: Bearer.
	BearerTokenFile string `yaml:"bearer_token_file" json:"bearer_token_file"`
	// MaxEvents per POST. Default 500.
	MaxEvents int `yaml:"max_events" json:"max_events"`
	// UploadSizeLimitBytes bounds one POST's body as sent, gzip-compressed (OPA's
	// upload_size_limit_bytes): a batch ends at max_events or before the compressed body would
	// exceed this, whichever comes first. A single event that alone exceeds it is still sent,
	// alone: events are never dropped. A 413 answer halves the batch and retries at once.
	// Default 32768 (OPA's default).
	UploadSizeLimitBytes int64 `yaml:"upload_size_limit_bytes" json:"upload_size_limit_bytes"`
	// Interval between uploads when idle. Default 1s.
	Interval time.Duration `yaml:"interval" json:"interval"`
	// MinBackoff / MaxBackoff bound the exponential retry delay. Defaults 100ms / 30s.
	MinBackoff time.Duration `yaml:"min_backoff" json:"min_backoff"`
	MaxBackoff time.Duration `yaml:"max_backoff" json:"max_backoff"`
	// Timeout of one POST. Default 10s.
	Timeout time.Duration `yaml:"timeout" json:"timeout"`
	// Name distinguishes the cursor file when several uploads are configured. Default "http".
	Name string `yaml:"name" json:"name"`
}

// WithDefaults returns c with zero values replaced by defaults.
func (c Config) WithDefaults() Config {
	if c.Mode == "" {
		c.Mode = ModeStrict
	}
	if c.SegmentMaxBytes == 0 {
		c.SegmentMaxBytes = 64 << 20
	}
	if c.PreallocateBytes == 0 {
		c.PreallocateBytes = 1 << 20
	}
	if c.SegmentMaxAge == 0 {
		c.SegmentMaxAge = 24 * time.Hour
	}
	if c.CheckpointEvery == 0 {
		c.CheckpointEvery = 1000
	}
	if c.CheckpointInterval == 0 {
		c.CheckpointInterval = 10 * time.Second
	}
	if c.MaxBatch == 0 {
		c.MaxBatch = 4096
	}
	if c.QueueSize == 0 {
		c.QueueSize = 65536
	}
	if c.AsyncFsyncInterval == 0 {
		c.AsyncFsyncInterval = time.Second
	}
	if c.Upload != nil {
		u := *c.Upload
		if u.MaxEvents == 0 {
			u.MaxEvents = 500
		}
		if u.UploadSizeLimitBytes == 0 {
			u.UploadSizeLimitBytes = 32 << 10
		}
		if u.Interval == 0 {
			u.Interval = time.Second
		}
		if u.MinBackoff == 0 {
			u.MinBackoff = 100 * time.Millisecond
		}
		if u.MaxBackoff == 0 {
			u.MaxBackoff = 30 * time.Second
		}
		if u.Timeout == 0 {
			u.Timeout = 10 * time.Second
		}
		if u.Name == "" {
			u.Name = "http"
		}
		if u.MaxBackoff > 0 && u.MaxBackoff < u.MinBackoff {
			u.MaxBackoff = u.MinBackoff // a min_backoff above the default max: the max follows
		}
		c.Upload = &u
	}
	return c
}

// Validate reports the first invalid key. Call it on WithDefaults() output.
func (c Config) Validate() error {
	switch c.Mode {
	case ModeStrict, ModeAsync:
	default:
		return fmt.Errorf("decision_log.mode: must be strict or async, got %q", c.Mode)
	}
	if c.Dir == "" {
		return fmt.Errorf("decision_log.dir: required")
	}
	if c.SegmentMaxBytes < 4096 {
		return fmt.Errorf("decision_log.segment_max_bytes: must be at least 4096, got %d", c.SegmentMaxBytes)
	}
	if c.PreallocateBytes < -1 || (c.PreallocateBytes > 0 && c.PreallocateBytes < 4096) {
		return fmt.Errorf("decision_log.preallocate_bytes: must be -1 (append) or at least 4096, got %d", c.PreallocateBytes)
	}
	if c.SegmentMaxAge < time.Second {
		return fmt.Errorf("decision_log.segment_max_age: must be at least 1s, got %s", c.SegmentMaxAge)
	}
	if c.RetainSegments < 0 || c.RetainAge < 0 {
		return fmt.Errorf("decision_log.retain_segments/retain_age: must not be negative")
	}
	if c.CheckpointEvery < 1 {
		return fmt.Errorf("decision_log.checkpoint_every: must be positive, got %d", c.CheckpointEvery)
	}
	if c.CheckpointInterval < 10*time.Millisecond {
		return fmt.Errorf("decision_log.checkpoint_interval: must be at least 10ms, got %s", c.CheckpointInterval)
	}
	if c.SigningKeyFile == "" && c.SigningVaultKey == "" && !c.UnsignedCheckpoints {
		return fmt.Errorf("decision_log.signing_key_file: required, or signing_vault_key (or unsigned_checkpoints: true for development)")
	}
	if c.SigningKeyFile != "" && c.SigningVaultKey != "" {
		return fmt.Errorf("decision_log.signing_vault_key: set either signing_key_file or signing_vault_key, not both")
	}
	if c.MaxBatch < 1 || c.QueueSize < 1 {
		return fmt.Errorf("decision_log.max_batch/queue_size: must be positive")
	}
	for i, r := range c.Mask {
		if err := r.validate(); err != nil {
			return fmt.Errorf("decision_log.mask[%d]: %w", i, err)
		}
	}
	if u := c.Upload; u != nil {
		p, err := url.Parse(u.URL)
		if err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
			return fmt.Errorf("decision_log.upload.url: %q is not an http(s) URL", u.URL)
		}
		if u.MaxEvents < 1 {
			return fmt.Errorf("decision_log.upload.max_events: must be positive")
		}
		if u.UploadSizeLimitBytes < 1 {
			return fmt.Errorf("decision_log.upload.upload_size_limit_bytes: must be positive, got %d", u.UploadSizeLimitBytes)
		}
		for name, d := range map[string]time.Duration{"interval": u.Interval, "min_backoff": u.MinBackoff, "max_backoff": u.MaxBackoff, "timeout": u.Timeout} {
			if d <= 0 {
				return fmt.Errorf("decision_log.upload.%s: must be positive, got %s", name, d)
			}
		}

		if strings.ContainsAny(u.Name, "/\\") {
			return fmt.Errorf("decision_log.upload.name: must not contain a path separator")
		}
	}
	return nil
}
