-- rulekit audit log, schema version 1.
-- Every decision is a row of `decisions`, written (and committed) before anything acts on it.
-- A row holds everything needed to replay the decision: the inputs as the engine read them, the
-- risk state, the outcome of every check, the outputs, and the policy's name, version and hash.

CREATE TABLE IF NOT EXISTS schema_info (
    version INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS policies (
    policy_hash     VARCHAR PRIMARY KEY,   -- sha256 of the effective policy (params after RM_ overrides)
    policy_name     VARCHAR NOT NULL,
    policy_version  INTEGER NOT NULL,
    source_path     VARCHAR,
    params          JSON NOT NULL,         -- effective param values
    check_names     VARCHAR[] NOT NULL,    -- rule ids, in the order of decisions.checks_passed
    first_seen      TIMESTAMPTZ NOT NULL
);

CREATE TABLE IF NOT EXISTS runs (
    run_id          VARCHAR PRIMARY KEY,
    mode            VARCHAR NOT NULL,      -- dry-run, backtest, paper, live
    command         VARCHAR,
    policy_hash     VARCHAR NOT NULL,
    started_at      TIMESTAMPTZ NOT NULL
);

CREATE TABLE IF NOT EXISTS decisions (
    run_id                VARCHAR NOT NULL,
    seq                   BIGINT NOT NULL,       -- order within the run; (run_id, seq) is the id
    mode                  VARCHAR NOT NULL,
    decided_at            TIMESTAMPTZ NOT NULL,  -- the decision's time (the signal's, when it has one)
    signal_id             VARCHAR,
    signal_time           TIMESTAMPTZ,
    symbol                VARCHAR,
    side                  VARCHAR,
    consensus             VARCHAR,
    confidence            DOUBLE,
    strength              DOUBLE,
    model_votes           JSON,
    price                 DOUBLE,
    atr                   DOUBLE,
    ema_200               DOUBLE,
    volume_24h            DOUBLE,
    spread_bps            DOUBLE,
    market_time           TIMESTAMPTZ,
    equity                DOUBLE,
    day_start_equity      DOUBLE,
    week_start_equity     DOUBLE,
    peak_equity           DOUBLE,
    consecutive_losses    INTEGER,
    open_trades           INTEGER,
    open_exposure         DOUBLE,
    circuit_breaker_until TIMESTAMPTZ,
    raw_input             JSON,                  -- the line as read, kept when it could not be parsed
    approved              BOOLEAN NOT NULL,
    reason                VARCHAR,               -- id of the first check that failed; NULL if approved
    checks_passed         BOOLEAN[] NOT NULL,    -- one per policies.check_names
    quantity              DOUBLE,
    notional              DOUBLE,
    leverage              DOUBLE,
    risk_amount           DOUBLE,
    risk_at_stop          DOUBLE,
    stop_loss             DOUBLE,
    take_profit           DOUBLE,
    breakeven_trigger     DOUBLE,
    partial_tp_price      DOUBLE,
    reward_risk           DOUBLE,
    policy_name           VARCHAR NOT NULL,
    policy_version        INTEGER NOT NULL,
    policy_hash           VARCHAR NOT NULL
);

-- Every check of every decision, one row each: `SELECT rule, count(*) FILTER (NOT passed) ...`
CREATE OR REPLACE VIEW decision_checks AS
SELECT d.run_id, d.seq, d.symbol, d.decided_at, d.policy_hash,
       unnest(p.check_names) AS rule, unnest(d.checks_passed) AS passed
FROM decisions d JOIN policies p USING (policy_hash);
