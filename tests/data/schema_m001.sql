-- The schema autopack's first release (migration m001_initial) created, frozen: the database a
-- user of that version has. Generated from commit ae78c2b (which introduced m001), not from
-- today's models: `git archive ae78c2b | tar -x -C scratch`, then in scratch
-- `python -c 'from autopack.store.migrations import migrate; migrate(Path("m001.db"))'`, and
-- the statements below are that file's sqlite_master (tables, then indexes) and _migrations.
-- Never regenerate or edit it: tests/test_schema_upgrade.py upgrades from it.

CREATE TABLE _migrations (
	name VARCHAR NOT NULL,
	applied_at DATETIME NOT NULL,
	PRIMARY KEY (name)
);

CREATE TABLE attempts (
	id INTEGER NOT NULL,
	phase_pk INTEGER NOT NULL,
	run_id VARCHAR NOT NULL,
	number INTEGER NOT NULL,
	executor_id VARCHAR,
	state VARCHAR NOT NULL,
	step VARCHAR NOT NULL,
	model VARCHAR,
	failure_kind VARCHAR,
	failure_fingerprint VARCHAR,
	failure_message VARCHAR,
	apply_stats JSON,
	decision JSON,
	tree_sha VARCHAR,
	"commit" VARCHAR,
	patch_path VARCHAR,
	builder_ms INTEGER NOT NULL,
	tests_ms INTEGER NOT NULL,
	wall_ms INTEGER NOT NULL,
	test_runs INTEGER NOT NULL,
	started_at DATETIME NOT NULL,
	finished_at DATETIME,
	PRIMARY KEY (id),
	UNIQUE (phase_pk, number),
	FOREIGN KEY(phase_pk) REFERENCES phases (pk),
	FOREIGN KEY(run_id) REFERENCES runs (id)
);

CREATE TABLE baselines (
	tree_sha VARCHAR NOT NULL,
	command_hash VARCHAR NOT NULL,
	test_run_id INTEGER NOT NULL,
	created_at DATETIME NOT NULL,
	PRIMARY KEY (tree_sha, command_hash),
	FOREIGN KEY(test_run_id) REFERENCES test_runs (id)
);

CREATE TABLE events (
	id INTEGER NOT NULL,
	run_id VARCHAR NOT NULL,
	phase_id VARCHAR,
	attempt_id INTEGER,
	kind VARCHAR NOT NULL,
	data JSON,
	created_at DATETIME NOT NULL,
	PRIMARY KEY (id),
	FOREIGN KEY(run_id) REFERENCES runs (id)
);

CREATE TABLE executors (
	id VARCHAR NOT NULL,
	pid INTEGER NOT NULL,
	host VARCHAR NOT NULL,
	command VARCHAR NOT NULL,
	run_id VARCHAR,
	phase_id VARCHAR,
	step VARCHAR,
	started_at DATETIME NOT NULL,
	heartbeat_at DATETIME NOT NULL,
	stopped_at DATETIME,
	PRIMARY KEY (id)
);

CREATE TABLE llm_calls (
	id INTEGER NOT NULL,
	run_id VARCHAR NOT NULL,
	phase_id VARCHAR,
	attempt_id INTEGER,
	role VARCHAR NOT NULL,
	model VARCHAR NOT NULL,
	max_tokens INTEGER NOT NULL,
	input_tokens INTEGER NOT NULL,
	output_tokens INTEGER NOT NULL,
	cache_read_tokens INTEGER NOT NULL,
	cache_write_tokens INTEGER NOT NULL,
	stop_reason VARCHAR,
	latency_ms INTEGER NOT NULL,
	request_id VARCHAR,
	cost_usd FLOAT,
	status VARCHAR NOT NULL,
	error VARCHAR,
	created_at DATETIME NOT NULL,
	PRIMARY KEY (id),
	FOREIGN KEY(run_id) REFERENCES runs (id),
	FOREIGN KEY(attempt_id) REFERENCES attempts (id)
);

CREATE TABLE phase_dependencies (
	phase_pk INTEGER NOT NULL,
	depends_on_pk INTEGER NOT NULL,
	PRIMARY KEY (phase_pk, depends_on_pk),
	FOREIGN KEY(phase_pk) REFERENCES phases (pk),
	FOREIGN KEY(depends_on_pk) REFERENCES phases (pk)
);

CREATE TABLE phases (
	pk INTEGER NOT NULL,
	run_id VARCHAR NOT NULL,
	phase_id VARCHAR NOT NULL,
	position INTEGER NOT NULL,
	spec JSON NOT NULL,
	state VARCHAR NOT NULL,
	attempts INTEGER NOT NULL,
	pass_attempts INTEGER NOT NULL,
	max_attempts INTEGER NOT NULL,
	"commit" VARCHAR,
	decision JSON,
	failure_kind VARCHAR,
	failure_fingerprint VARCHAR,
	failure_message VARCHAR,
	claimed_by VARCHAR,
	lease_expires_at DATETIME,
	updated_at DATETIME NOT NULL,
	PRIMARY KEY (pk),
	UNIQUE (run_id, phase_id),
	FOREIGN KEY(run_id) REFERENCES runs (id)
);

CREATE TABLE runs (
	id VARCHAR NOT NULL,
	goal VARCHAR NOT NULL,
	plan_path VARCHAR NOT NULL,
	plan_hash VARCHAR NOT NULL,
	comparable_hash VARCHAR NOT NULL,
	"plan" JSON NOT NULL,
	flags JSON NOT NULL,
	repo_root VARCHAR NOT NULL,
	subdir VARCHAR NOT NULL,
	base_commit VARCHAR NOT NULL,
	branch VARCHAR NOT NULL,
	worktree VARCHAR NOT NULL,
	autopack_version VARCHAR NOT NULL,
	created_at DATETIME NOT NULL,
	updated_at DATETIME NOT NULL,
	PRIMARY KEY (id)
);

CREATE TABLE test_outcomes (
	id INTEGER NOT NULL,
	test_run_id INTEGER NOT NULL,
	test_id VARCHAR NOT NULL,
	outcome VARCHAR NOT NULL,
	file VARCHAR,
	message VARCHAR NOT NULL,
	duration_s FLOAT NOT NULL,
	collection_error BOOLEAN NOT NULL,
	PRIMARY KEY (id),
	FOREIGN KEY(test_run_id) REFERENCES test_runs (id)
);

CREATE TABLE test_runs (
	id INTEGER NOT NULL,
	run_id VARCHAR NOT NULL,
	attempt_id INTEGER,
	kind VARCHAR NOT NULL,
	tree_sha VARCHAR,
	command VARCHAR NOT NULL,
	exit_code INTEGER,
	timed_out BOOLEAN NOT NULL,
	duration_s FLOAT NOT NULL,
	passed INTEGER NOT NULL,
	failed INTEGER NOT NULL,
	errors INTEGER NOT NULL,
	skipped INTEGER NOT NULL,
	total INTEGER NOT NULL,
	junit_error VARCHAR,
	output_tail VARCHAR NOT NULL,
	output_bytes INTEGER NOT NULL,
	output_truncated BOOLEAN NOT NULL,
	log_path VARCHAR,
	created_at DATETIME NOT NULL,
	PRIMARY KEY (id),
	FOREIGN KEY(run_id) REFERENCES runs (id),
	FOREIGN KEY(attempt_id) REFERENCES attempts (id)
);

CREATE INDEX ix_attempts_phase_pk ON attempts (phase_pk);
CREATE INDEX ix_attempts_run_id ON attempts (run_id);
CREATE INDEX ix_events_run_id ON events (run_id);
CREATE INDEX ix_executors_heartbeat_at ON executors (heartbeat_at);
CREATE INDEX ix_llm_calls_run_role ON llm_calls (run_id, role);
CREATE INDEX ix_phase_dependencies_depends_on_pk ON phase_dependencies (depends_on_pk);
CREATE INDEX ix_phases_run_id ON phases (run_id);
CREATE INDEX ix_phases_state_run ON phases (state, run_id);
CREATE INDEX ix_runs_created_at ON runs (created_at);
CREATE INDEX ix_runs_plan_hash ON runs (plan_hash);
CREATE INDEX ix_test_outcomes_test_run_id ON test_outcomes (test_run_id);
CREATE INDEX ix_test_runs_attempt_id ON test_runs (attempt_id);
CREATE INDEX ix_test_runs_run_id ON test_runs (run_id);

INSERT INTO _migrations (name, applied_at) VALUES ('m001_initial', '2026-12-01 21:47:04.946408');
