-- The PostgreSQL schema at migration m007, frozen (pg_dump --schema-only of PostgreSQL 15, comments
-- dropped): what a database created before m008 holds. tests/test_schema_upgrade_pg.py upgrades it.

SET statement_timeout = 0;
SET lock_timeout = 0;
SET idle_in_transaction_session_timeout = 0;
SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;
SELECT pg_catalog.set_config('search_path', '', false);
SET check_function_bodies = false;
SET xmloption = content;
SET client_min_messages = warning;
SET row_security = off;

SET default_tablespace = '';

SET default_table_access_method = heap;

CREATE TABLE public._migrations (
    name character varying NOT NULL,
    applied_at timestamp without time zone NOT NULL
);

CREATE TABLE public.attempts (
    id integer NOT NULL,
    phase_pk integer NOT NULL,
    run_id character varying NOT NULL,
    number integer NOT NULL,
    executor_id character varying,
    state character varying NOT NULL,
    step character varying NOT NULL,
    model character varying,
    builder character varying,
    failure_kind character varying,
    failure_fingerprint character varying,
    failure_message character varying,
    apply_stats json,
    decision json,
    tree_sha character varying,
    commit character varying,
    patch_path character varying,
    budget integer,
    budget_source character varying,
    builder_ms integer NOT NULL,
    tests_ms integer NOT NULL,
    wall_ms integer NOT NULL,
    started_at timestamp without time zone NOT NULL,
    finished_at timestamp without time zone
);

CREATE SEQUENCE public.attempts_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;

ALTER SEQUENCE public.attempts_id_seq OWNED BY public.attempts.id;

CREATE TABLE public.baselines (
    tree_sha character varying NOT NULL,
    command_hash character varying NOT NULL,
    test_run_id integer NOT NULL,
    created_at timestamp without time zone NOT NULL
);

CREATE TABLE public.events (
    id integer NOT NULL,
    run_id character varying NOT NULL,
    phase_id character varying,
    attempt_id integer,
    kind character varying NOT NULL,
    data json,
    created_at timestamp without time zone NOT NULL
);

CREATE SEQUENCE public.events_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;

ALTER SEQUENCE public.events_id_seq OWNED BY public.events.id;

CREATE TABLE public.executors (
    id character varying NOT NULL,
    pid integer NOT NULL,
    host character varying NOT NULL,
    command character varying NOT NULL,
    run_id character varying,
    phase_id character varying,
    step character varying,
    started_at timestamp without time zone NOT NULL,
    heartbeat_at timestamp without time zone NOT NULL,
    stopped_at timestamp without time zone
);

CREATE TABLE public.landings (
    id integer NOT NULL,
    run_id character varying NOT NULL,
    method character varying NOT NULL,
    base_branch character varying NOT NULL,
    base_before character varying NOT NULL,
    landed_commit character varying NOT NULL,
    partial boolean NOT NULL,
    remote character varying,
    pr_url character varying,
    details json,
    created_at timestamp without time zone NOT NULL
);

CREATE SEQUENCE public.landings_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;

ALTER SEQUENCE public.landings_id_seq OWNED BY public.landings.id;

CREATE TABLE public.llm_calls (
    id integer NOT NULL,
    run_id character varying NOT NULL,
    phase_id character varying,
    attempt_id integer,
    role character varying NOT NULL,
    model character varying NOT NULL,
    max_tokens integer NOT NULL,
    input_tokens integer NOT NULL,
    output_tokens integer NOT NULL,
    cache_read_tokens integer NOT NULL,
    cache_write_tokens integer NOT NULL,
    stop_reason character varying,
    latency_ms integer NOT NULL,
    request_id character varying,
    cost_usd double precision,
    predicted_tokens integer,
    http_status integer,
    status character varying NOT NULL,
    error character varying,
    created_at timestamp without time zone NOT NULL
);

CREATE SEQUENCE public.llm_calls_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;

ALTER SEQUENCE public.llm_calls_id_seq OWNED BY public.llm_calls.id;

CREATE TABLE public.phase_dependencies (
    phase_pk integer NOT NULL,
    depends_on_pk integer NOT NULL
);

CREATE TABLE public.phases (
    pk integer NOT NULL,
    run_id character varying NOT NULL,
    phase_id character varying NOT NULL,
    "position" integer NOT NULL,
    spec json NOT NULL,
    state character varying NOT NULL,
    attempts integer NOT NULL,
    pass_attempts integer NOT NULL,
    max_attempts integer NOT NULL,
    commit character varying,
    decision json,
    failure_kind character varying,
    failure_fingerprint character varying,
    failure_message character varying,
    claimed_by character varying,
    lease_expires_at timestamp without time zone,
    parked_reason character varying,
    escalated_budget integer,
    updated_at timestamp without time zone NOT NULL
);

CREATE SEQUENCE public.phases_pk_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;

ALTER SEQUENCE public.phases_pk_seq OWNED BY public.phases.pk;

CREATE TABLE public.runs (
    id character varying NOT NULL,
    goal character varying NOT NULL,
    plan_path character varying NOT NULL,
    plan_hash character varying NOT NULL,
    comparable_hash character varying NOT NULL,
    plan json NOT NULL,
    flags json NOT NULL,
    repo_root character varying NOT NULL,
    subdir character varying NOT NULL,
    base_commit character varying NOT NULL,
    branch character varying NOT NULL,
    worktree character varying NOT NULL,
    autopack_version character varying NOT NULL,
    builder character varying,
    created_at timestamp without time zone NOT NULL
);

CREATE TABLE public.test_outcomes (
    id integer NOT NULL,
    test_run_id integer NOT NULL,
    test_id character varying NOT NULL,
    outcome character varying NOT NULL,
    file character varying,
    message character varying NOT NULL,
    duration_s double precision NOT NULL,
    collection_error boolean NOT NULL
);

CREATE SEQUENCE public.test_outcomes_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;

ALTER SEQUENCE public.test_outcomes_id_seq OWNED BY public.test_outcomes.id;

CREATE TABLE public.test_runs (
    id integer NOT NULL,
    run_id character varying NOT NULL,
    attempt_id integer,
    kind character varying NOT NULL,
    tree_sha character varying,
    command character varying NOT NULL,
    exit_code integer,
    timed_out boolean NOT NULL,
    duration_s double precision NOT NULL,
    passed integer NOT NULL,
    failed integer NOT NULL,
    errors integer NOT NULL,
    skipped integer NOT NULL,
    total integer NOT NULL,
    junit_error character varying,
    output_tail character varying NOT NULL,
    output_bytes integer NOT NULL,
    output_truncated boolean NOT NULL,
    log_path character varying,
    created_at timestamp without time zone NOT NULL
);

CREATE SEQUENCE public.test_runs_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;

ALTER SEQUENCE public.test_runs_id_seq OWNED BY public.test_runs.id;

CREATE TABLE public.transcript_turns (
    id integer NOT NULL,
    attempt_id integer NOT NULL,
    turn integer NOT NULL,
    max_tokens integer NOT NULL,
    request json NOT NULL,
    response json NOT NULL,
    created_at timestamp without time zone NOT NULL
);

CREATE SEQUENCE public.transcript_turns_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;

ALTER SEQUENCE public.transcript_turns_id_seq OWNED BY public.transcript_turns.id;

ALTER TABLE ONLY public.attempts ALTER COLUMN id SET DEFAULT nextval('public.attempts_id_seq'::regclass);

ALTER TABLE ONLY public.events ALTER COLUMN id SET DEFAULT nextval('public.events_id_seq'::regclass);

ALTER TABLE ONLY public.landings ALTER COLUMN id SET DEFAULT nextval('public.landings_id_seq'::regclass);

ALTER TABLE ONLY public.llm_calls ALTER COLUMN id SET DEFAULT nextval('public.llm_calls_id_seq'::regclass);

ALTER TABLE ONLY public.phases ALTER COLUMN pk SET DEFAULT nextval('public.phases_pk_seq'::regclass);

ALTER TABLE ONLY public.test_outcomes ALTER COLUMN id SET DEFAULT nextval('public.test_outcomes_id_seq'::regclass);

ALTER TABLE ONLY public.test_runs ALTER COLUMN id SET DEFAULT nextval('public.test_runs_id_seq'::regclass);

ALTER TABLE ONLY public.transcript_turns ALTER COLUMN id SET DEFAULT nextval('public.transcript_turns_id_seq'::regclass);

ALTER TABLE ONLY public._migrations
    ADD CONSTRAINT _migrations_pkey PRIMARY KEY (name);

ALTER TABLE ONLY public.attempts
    ADD CONSTRAINT attempts_phase_pk_number_key UNIQUE (phase_pk, number);

ALTER TABLE ONLY public.attempts
    ADD CONSTRAINT attempts_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.baselines
    ADD CONSTRAINT baselines_pkey PRIMARY KEY (tree_sha, command_hash);

ALTER TABLE ONLY public.events
    ADD CONSTRAINT events_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.executors
    ADD CONSTRAINT executors_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.landings
    ADD CONSTRAINT landings_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.llm_calls
    ADD CONSTRAINT llm_calls_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.phase_dependencies
    ADD CONSTRAINT phase_dependencies_pkey PRIMARY KEY (phase_pk, depends_on_pk);

ALTER TABLE ONLY public.phases
    ADD CONSTRAINT phases_pkey PRIMARY KEY (pk);

ALTER TABLE ONLY public.phases
    ADD CONSTRAINT phases_run_id_phase_id_key UNIQUE (run_id, phase_id);

ALTER TABLE ONLY public.runs
    ADD CONSTRAINT runs_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.test_outcomes
    ADD CONSTRAINT test_outcomes_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.test_runs
    ADD CONSTRAINT test_runs_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.transcript_turns
    ADD CONSTRAINT transcript_turns_pkey PRIMARY KEY (id);

CREATE INDEX ix_attempts_executor_id ON public.attempts USING btree (executor_id);

CREATE INDEX ix_attempts_phase_pk ON public.attempts USING btree (phase_pk);

CREATE INDEX ix_attempts_run_id ON public.attempts USING btree (run_id);

CREATE INDEX ix_events_run_id ON public.events USING btree (run_id);

CREATE INDEX ix_executors_heartbeat_at ON public.executors USING btree (heartbeat_at);

CREATE INDEX ix_landings_run_id ON public.landings USING btree (run_id);

CREATE INDEX ix_llm_calls_attempt_id ON public.llm_calls USING btree (attempt_id);

CREATE INDEX ix_llm_calls_run_role_usage ON public.llm_calls USING btree (run_id, role, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, cost_usd);

CREATE INDEX ix_phase_dependencies_depends_on_pk ON public.phase_dependencies USING btree (depends_on_pk);

CREATE INDEX ix_phases_run_id ON public.phases USING btree (run_id);

CREATE INDEX ix_phases_state_run ON public.phases USING btree (state, run_id);

CREATE INDEX ix_runs_created_at ON public.runs USING btree (created_at);

CREATE INDEX ix_runs_plan_hash ON public.runs USING btree (plan_hash);

CREATE INDEX ix_test_outcomes_test_run_id ON public.test_outcomes USING btree (test_run_id);

CREATE INDEX ix_test_runs_attempt_id ON public.test_runs USING btree (attempt_id);

CREATE INDEX ix_test_runs_run_id ON public.test_runs USING btree (run_id);

CREATE INDEX ix_transcript_turns_attempt_id ON public.transcript_turns USING btree (attempt_id);

ALTER TABLE ONLY public.attempts
    ADD CONSTRAINT attempts_phase_pk_fkey FOREIGN KEY (phase_pk) REFERENCES public.phases(pk);

ALTER TABLE ONLY public.attempts
    ADD CONSTRAINT attempts_run_id_fkey FOREIGN KEY (run_id) REFERENCES public.runs(id);

ALTER TABLE ONLY public.baselines
    ADD CONSTRAINT baselines_test_run_id_fkey FOREIGN KEY (test_run_id) REFERENCES public.test_runs(id);

ALTER TABLE ONLY public.events
    ADD CONSTRAINT events_run_id_fkey FOREIGN KEY (run_id) REFERENCES public.runs(id);

ALTER TABLE ONLY public.landings
    ADD CONSTRAINT landings_run_id_fkey FOREIGN KEY (run_id) REFERENCES public.runs(id);

ALTER TABLE ONLY public.llm_calls
    ADD CONSTRAINT llm_calls_attempt_id_fkey FOREIGN KEY (attempt_id) REFERENCES public.attempts(id);

ALTER TABLE ONLY public.llm_calls
    ADD CONSTRAINT llm_calls_run_id_fkey FOREIGN KEY (run_id) REFERENCES public.runs(id);

ALTER TABLE ONLY public.phase_dependencies
    ADD CONSTRAINT phase_dependencies_depends_on_pk_fkey FOREIGN KEY (depends_on_pk) REFERENCES public.phases(pk);

ALTER TABLE ONLY public.phase_dependencies
    ADD CONSTRAINT phase_dependencies_phase_pk_fkey FOREIGN KEY (phase_pk) REFERENCES public.phases(pk);

ALTER TABLE ONLY public.phases
    ADD CONSTRAINT phases_run_id_fkey FOREIGN KEY (run_id) REFERENCES public.runs(id);

ALTER TABLE ONLY public.test_outcomes
    ADD CONSTRAINT test_outcomes_test_run_id_fkey FOREIGN KEY (test_run_id) REFERENCES public.test_runs(id);

ALTER TABLE ONLY public.test_runs
    ADD CONSTRAINT test_runs_attempt_id_fkey FOREIGN KEY (attempt_id) REFERENCES public.attempts(id);

ALTER TABLE ONLY public.test_runs
    ADD CONSTRAINT test_runs_run_id_fkey FOREIGN KEY (run_id) REFERENCES public.runs(id);

ALTER TABLE ONLY public.transcript_turns
    ADD CONSTRAINT transcript_turns_attempt_id_fkey FOREIGN KEY (attempt_id) REFERENCES public.attempts(id);


INSERT INTO public._migrations (name, applied_at) VALUES ('m001_initial', now());
INSERT INTO public._migrations (name, applied_at) VALUES ('m002_parking_budgets_and_ledger_detail', now());
INSERT INTO public._migrations (name, applied_at) VALUES ('m003_read_path_indexes', now());
INSERT INTO public._migrations (name, applied_at) VALUES ('m004_comparable_hash_without_cassette', now());
INSERT INTO public._migrations (name, applied_at) VALUES ('m005_builder_modes_and_transcripts', now());
INSERT INTO public._migrations (name, applied_at) VALUES ('m006_landings', now());
INSERT INTO public._migrations (name, applied_at) VALUES ('m007_derived_state', now());
