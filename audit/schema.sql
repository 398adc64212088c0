-- rulekit audit log, schema version 5 (2 added the risk state, trades and their events; 3 the
-- runs' inputs; 4 the cap that bound each size, decisions.size_capped_by; 5 what the failing rule
-- compared, decisions.failed).
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
    started_at      TIMESTAMPTZ NOT NULL,
    inputs          JSON                   -- what the run was given (files, equity, options)
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
    history_bars          DOUBLE,                -- bars behind market fields rulekit computed
    market_time           TIMESTAMPTZ,
    equity                DOUBLE,
    day_start_equity      DOUBLE,
    week_start_equity     DOUBLE,
    peak_equity           DOUBLE,
    breaker_reference_equity DOUBLE,             -- highest equity since the breaker last tripped
    consecutive_losses    INTEGER,
    open_trades           INTEGER,
    open_exposure         DOUBLE,
    circuit_breaker_until TIMESTAMPTZ,
    symbol_trade_open     BOOLEAN,               -- a trade on this symbol was open
    raw_input             JSON,                  -- the line as read, kept when it could not be parsed
    approved              BOOLEAN NOT NULL,
    reason                VARCHAR,               -- id of the first check that failed; NULL if approved
    checks_passed         BOOLEAN[] NOT NULL,    -- one per policies.check_names
    decide_us             DOUBLE,                -- the engine's time for it (a batch: its average)
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
    size_capped_by        VARCHAR,               -- none, max_notional, exposure_headroom (approved)
    failed                JSON,                  -- rejected: the values the failing rule compared
    policy_name           VARCHAR NOT NULL,
    policy_version        INTEGER NOT NULL,
    policy_hash           VARCHAR NOT NULL
);

-- Every check of every decision, one row each: `SELECT rule, count(*) FILTER (NOT passed) ...`
CREATE OR REPLACE VIEW decision_checks AS
SELECT d.run_id, d.seq, d.symbol, d.decided_at, d.policy_hash,
       unnest(p.check_names) AS rule, unnest(d.checks_passed) AS passed
FROM decisions d JOIN policies p USING (policy_hash);

-- The account's global risk state: one row per account, replaced in the same transaction as the
-- decision or trade event that changed it. `record` is the whole state a restart restores.
CREATE TABLE IF NOT EXISTS account_state (
    account_id            VARCHAR PRIMARY KEY,
    updated_at            TIMESTAMPTZ NOT NULL,
    as_of                 TIMESTAMPTZ,           -- market time of the last change
    start_equity          DOUBLE NOT NULL,
    equity                DOUBLE NOT NULL,       -- marked: realised plus unrealised PnL
    realised_pnl          DOUBLE NOT NULL,
    day_start_equity      DOUBLE,
    week_start_equity     DOUBLE,
    peak_equity           DOUBLE,
    consecutive_losses    INTEGER NOT NULL,
    circuit_breaker_until TIMESTAMPTZ,
    open_trades           INTEGER NOT NULL,
    record                VARCHAR NOT NULL       -- JSON
);

-- One row per trade, replaced at every event; `record` is what a restart restores.
CREATE TABLE IF NOT EXISTS trades (
    trade_id              VARCHAR NOT NULL,  -- unique within its account
    account_id            VARCHAR NOT NULL,
    run_id                VARCHAR,
    decision_seq          BIGINT,                -- the approving decision: (run_id, decision_seq)
    symbol                VARCHAR NOT NULL,
    side                  VARCHAR NOT NULL,
    state                 VARCHAR NOT NULL,
    opened_at             TIMESTAMPTZ NOT NULL,
    entry_price           DOUBLE NOT NULL,
    initial_quantity      DOUBLE NOT NULL,
    quantity              DOUBLE NOT NULL,       -- still open
    initial_stop          DOUBLE NOT NULL,
    stop_loss             DOUBLE NOT NULL,       -- in force now
    take_profit           DOUBLE NOT NULL,
    initial_risk          DOUBLE NOT NULL,       -- 1 R in money
    realised_pnl          DOUBLE NOT NULL,       -- after fees
    fees                  DOUBLE NOT NULL,
    r_multiple            DOUBLE,                -- realised PnL / initial risk
    mfe_r                 DOUBLE,
    mae_r                 DOUBLE,
    closed_at             TIMESTAMPTZ,
    exit_price            DOUBLE,
    exit_reason           VARCHAR,
    holding_seconds       DOUBLE,
    record                VARCHAR NOT NULL,      -- JSON
    PRIMARY KEY (account_id, trade_id)
);

CREATE TABLE IF NOT EXISTS trade_events (
    run_id                VARCHAR NOT NULL,
    trade_id              VARCHAR NOT NULL,
    event                 VARCHAR NOT NULL,      -- OPEN, BREAKEVEN, PARTIAL_TP, TRAILING, CLOSED
    occurred_at           TIMESTAMPTZ NOT NULL,  -- open time of the bar it happened in
    price                 DOUBLE NOT NULL,
    quantity              DOUBLE NOT NULL,
    stop_loss             DOUBLE NOT NULL,
    state                 VARCHAR NOT NULL,
    reason                VARCHAR,
    pnl                   DOUBLE,
    r_multiple            DOUBLE
);

-- Changes of the global state: circuit-breaker trips, new UTC days and weeks.
CREATE TABLE IF NOT EXISTS risk_events (
    run_id                VARCHAR NOT NULL,
    account_id            VARCHAR NOT NULL,
    kind                  VARCHAR NOT NULL,
    occurred_at           TIMESTAMPTZ NOT NULL,
    equity                DOUBLE NOT NULL,
    detail                VARCHAR
);

-- What a long-running process needs besides the account to resume exactly: the paper exchange's
-- positions and orders, how far a followed signals file has been read. JSON, per account.
CREATE TABLE IF NOT EXISTS run_state (
    account_id            VARCHAR NOT NULL,
    key                   VARCHAR NOT NULL,
    value                 VARCHAR NOT NULL,
    updated_at            TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (account_id, key)
);
