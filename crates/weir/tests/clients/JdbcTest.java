// Weir against pgJDBC (Debian's /usr/share/java/postgresql.jar, 42.5.x).
//
//   javac -cp /usr/share/java/postgresql.jar -d OUT JdbcTest.java
//   WEIR_PORT=5466 java -cp OUT:/usr/share/java/postgresql.jar JdbcTest
//
// What pgJDBC does on the wire that the Python clients do not:
//   - startup packet with client_encoding=UTF8, DateStyle=ISO, TimeZone (the
//     JVM's; set to UTC here), extra_float_digits=2; it checks the
//     integer_datetimes / standard_conforming_strings ParameterStatus.
//   - a PreparedStatement runs as the unnamed statement for its first
//     prepareThreshold-1 (= 4) executions; from the 5th it parses a named
//     statement (S_1), Describes it, and from then on asks for *binary*
//     results for the types it can decode (int2/4/8, float4/8, numeric,
//     date, time, timestamp[tz], bytea, ...).  Parameters: setInt/setLong/
//     setDouble are binary, setString is varchar (OID 1043), legacy setDate/
//     setTimestamp are untyped (OID 0) text with a zone offset appended.
//   - executeBatch sends many Parse/Bind/Execute and one Sync.
//
// Checks print PASS/FAIL; "pending" ones (none today) print XFAIL/XPASS and do not change the exit status unless
// WEIR_STRICT=1.  WEIR_CHECKS=name,name runs only those checks.

import java.math.BigDecimal;
import java.sql.Connection;
import java.sql.DatabaseMetaData;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Savepoint;
import java.sql.Statement;
import java.sql.Types;
import java.time.LocalDate;
import java.time.LocalDateTime;
import java.time.OffsetDateTime;
import java.time.ZoneOffset;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashSet;
import java.util.List;
import java.util.Objects;
import java.util.Set;
import java.util.TimeZone;

import org.postgresql.PGResultSetMetaData;
import org.postgresql.PGStatement;

public class JdbcTest {
    static String url;
    static final boolean REFERENCE_PG = "1".equals(System.getenv("WEIR_REFERENCE_PG"));

    // ---------------------------------------------------------------- harness

    interface Body {
        void run() throws Exception;
    }

    record Check(String name, String pendingReason, Body body) {}

    static final List<Check> CHECKS = new ArrayList<>();

    static void check(String name, Body body) {
        CHECKS.add(new Check(name, null, body));
    }

    static void pending(String name, String reason, Body body) {
        CHECKS.add(new Check(name, reason, body));
    }

    static class CheckFailed extends AssertionError {
        CheckFailed(String msg) {
            super(msg);
        }
    }

    static Connection connect() throws SQLException {
        return DriverManager.getConnection(url);
    }

    static void eq(Object actual, Object expected, String what) {
        if (!Objects.equals(actual, expected)) {
            throw new CheckFailed(what + ": expected " + show(expected) + ", got " + show(actual));
        }
    }

    static String show(Object v) {
        if (v == null) return "null";
        if (v instanceof byte[] b) return "bytes" + Arrays.toString(b);
        return v + " (" + v.getClass().getSimpleName() + ")";
    }

    static void expectSqlState(Body body, String state, String what) throws Exception {
        try {
            body.run();
        } catch (SQLException e) {
            if (!state.equals(e.getSQLState())) {
                throw new CheckFailed(what + ": expected SQLSTATE " + state + ", got " + e.getSQLState() + ": " + e);
            }
            return;
        }
        throw new CheckFailed(what + ": expected an error with SQLSTATE " + state + ", but it succeeded");
    }

    static long scalarLong(Connection c, String sql) throws SQLException {
        try (Statement s = c.createStatement(); ResultSet rs = s.executeQuery(sql)) {
            if (!rs.next()) throw new CheckFailed(sql + ": no row");
            return rs.getLong(1);
        }
    }

    static String scalarString(Connection c, String sql) throws SQLException {
        try (Statement s = c.createStatement(); ResultSet rs = s.executeQuery(sql)) {
            if (!rs.next()) throw new CheckFailed(sql + ": no row");
            return rs.getString(1);
        }
    }

    static List<Integer> ids(Connection c, String table) throws SQLException {
        List<Integer> out = new ArrayList<>();
        try (Statement s = c.createStatement(); ResultSet rs = s.executeQuery("SELECT id FROM " + table + " ORDER BY id")) {
            while (rs.next()) out.add(rs.getInt(1));
        }
        return out;
    }

    /** Before reading a materialized view: nothing on Weir, REFRESH on a reference Postgres. */
    static void refresh(Connection c, String view) throws SQLException {
        if (REFERENCE_PG) {
            try (Statement s = c.createStatement()) {
                s.execute("REFRESH MATERIALIZED VIEW " + view);
            }
        }
    }

    // ------------------------------------------------------------------ data

    // The same rows as weirtest.py's TYPES_ROWS (see there); nulls in row 3.
    static final String TYPES_DDL = "CREATE TABLE %s (id INT PRIMARY KEY, big BIGINT, name TEXT NOT NULL, "
            + "score DOUBLE PRECISION, active BOOLEAN, price NUMERIC(12, 2), day DATE, at TIMESTAMP, at_tz TIMESTAMPTZ)";

    record Row(int id, Long big, String name, Double score, Boolean active, BigDecimal price, LocalDate day,
               LocalDateTime at, OffsetDateTime atTz) {}

    static final Row[] ROWS = {
        new Row(1, (1L << 40) + 1, "alpha", 1.5, true, new BigDecimal("12.34"), LocalDate.of(2024, 1, 2),
                LocalDateTime.of(2024, 1, 2, 3, 4, 5, 123456000),
                OffsetDateTime.of(2024, 1, 2, 3, 4, 5, 500000000, ZoneOffset.UTC)),
        new Row(2, -5L, "it's b\u00e9ta \u00fcn\u00efcode \u2603", -0.25, false, new BigDecimal("-0.01"),
                LocalDate.of(1999, 12, 31), LocalDateTime.of(2000, 2, 29, 23, 59, 59),
                OffsetDateTime.of(2020, 6, 1, 14, 0, 0, 0, ZoneOffset.ofHours(2))),
        new Row(3, null, "nulls", null, null, null, null, null, null),
        new Row(4, Long.MIN_VALUE, "", 0.1, true, new BigDecimal("9999999999.99"), LocalDate.of(1970, 1, 1),
                LocalDateTime.of(1969, 12, 31, 23, 59, 59, 999999000),
                OffsetDateTime.of(1900, 1, 1, 0, 0, 0, 0, ZoneOffset.UTC)),
    };

    static Row readRow(ResultSet rs) throws SQLException {
        return new Row(rs.getInt("id"), rs.getObject("big", Long.class), rs.getString("name"),
                rs.getObject("score", Double.class), rs.getObject("active", Boolean.class),
                rs.getBigDecimal("price"), rs.getObject("day", LocalDate.class),
                rs.getObject("at", LocalDateTime.class), rs.getObject("at_tz", OffsetDateTime.class));
    }

    /** Weir and Postgres return timestamptz in UTC: normalize the expected value. */
    static Row utc(Row r) {
        return new Row(r.id, r.big, r.name, r.score, r.active, r.price, r.day, r.at,
                r.atTz == null ? null : r.atTz.withOffsetSameInstant(ZoneOffset.UTC));
    }

    static void bindRow(PreparedStatement ps, Row r) throws SQLException {
        ps.setInt(1, r.id);
        if (r.big == null) ps.setNull(2, Types.BIGINT); else ps.setLong(2, r.big);
        ps.setString(3, r.name);
        if (r.score == null) ps.setNull(4, Types.DOUBLE); else ps.setDouble(4, r.score);
        if (r.active == null) ps.setNull(5, Types.BOOLEAN); else ps.setBoolean(5, r.active);
        ps.setBigDecimal(6, r.price);
        ps.setObject(7, r.day, Types.DATE);
        ps.setObject(8, r.at, Types.TIMESTAMP);
        ps.setObject(9, r.atTz, Types.TIMESTAMP_WITH_TIMEZONE);
    }

    // ---------------------------------------------------------------- checks

    static void registerChecks() {
        check("connect_and_settings", () -> {
            try (Connection c = connect()) {
                DatabaseMetaData md = c.getMetaData();  // these come from ParameterStatus, no query
                eq(md.getDatabaseProductName(), "PostgreSQL", "getDatabaseProductName");
                if (!REFERENCE_PG) {
                    eq(md.getDatabaseProductVersion(), "14.13", "getDatabaseProductVersion");
                    eq(md.getDatabaseMajorVersion(), 14, "getDatabaseMajorVersion");
                }
                eq(scalarLong(c, "SELECT 1"), 1L, "SELECT 1");
                eq(scalarString(c, "SHOW TimeZone"), "UTC", "TimeZone from the startup packet");
                c.setClientInfo("ApplicationName", "jdbc-test");  // SET application_name = 'jdbc-test'
                eq(scalarString(c, "SHOW application_name"), "jdbc-test", "application_name after setClientInfo");
            }
        });

        check("types_roundtrip", () -> {
            try (Connection c = connect(); Statement s = c.createStatement()) {
                s.execute(String.format(TYPES_DDL, "jdbc_types"));
                try (PreparedStatement ps = c.prepareStatement("INSERT INTO jdbc_types VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)")) {
                    for (Row r : ROWS) {
                        bindRow(ps, r);
                        eq(ps.executeUpdate(), 1, "INSERT update count id=" + r.id);
                    }
                }
                try (ResultSet rs = s.executeQuery("SELECT * FROM jdbc_types ORDER BY id")) {
                    int[] oidTypes = {Types.INTEGER, Types.BIGINT, Types.VARCHAR, Types.DOUBLE, Types.BIT,
                        Types.NUMERIC, Types.DATE, Types.TIMESTAMP, Types.TIMESTAMP};
                    for (int i = 0; i < oidTypes.length; i++) {
                        eq(rs.getMetaData().getColumnType(i + 1), oidTypes[i], "java.sql.Types of column " + (i + 1));
                    }
                    for (Row want : ROWS) {
                        if (!rs.next()) throw new CheckFailed("missing row " + want.id);
                        eq(readRow(rs), utc(want), "row " + want.id);
                    }
                    eq(rs.next(), false, "no extra rows");
                }
            }
        });

        check("legacy_date_setters", () -> {
            // setDate/setTimestamp send untyped (OID 0) text with an offset,
            // e.g. '2024-01-02 03:04:05.123456+00'; into a TIMESTAMP column
            // Postgres ignores the offset.
            try (Connection c = connect(); Statement s = c.createStatement()) {
                s.execute("CREATE TABLE jdbc_legacy (id INT PRIMARY KEY, day DATE, at TIMESTAMP, at_tz TIMESTAMPTZ)");
                java.sql.Timestamp ts = java.sql.Timestamp.valueOf("2024-01-02 03:04:05.123456");
                try (PreparedStatement ps = c.prepareStatement("INSERT INTO jdbc_legacy VALUES (?, ?, ?, ?)")) {
                    ps.setInt(1, 1);
                    ps.setDate(2, java.sql.Date.valueOf("2024-01-02"));
                    ps.setTimestamp(3, ts);
                    ps.setTimestamp(4, ts);
                    eq(ps.executeUpdate(), 1, "INSERT update count");
                }
                try (ResultSet rs = s.executeQuery("SELECT day, at, at_tz FROM jdbc_legacy")) {
                    rs.next();
                    eq(rs.getDate(1), java.sql.Date.valueOf("2024-01-02"), "getDate");
                    eq(rs.getTimestamp(2), ts, "getTimestamp (timestamp)");
                    eq(rs.getTimestamp(3), ts, "getTimestamp (timestamptz, JVM zone UTC)");
                }
            }
        });

        check("bytea_roundtrip", () -> {
            byte[][] values = {{0, 1, (byte) 0xff}, {}, null};
            try (Connection c = connect(); Statement s = c.createStatement()) {
                s.execute("CREATE TABLE jdbc_bytea (id INT PRIMARY KEY, b BYTEA)");
                try (PreparedStatement ps = c.prepareStatement("INSERT INTO jdbc_bytea VALUES (?, ?)")) {
                    for (int i = 0; i < values.length; i++) {
                        ps.setInt(1, i);
                        ps.setBytes(2, values[i]);  // binary bytea parameter
                        ps.executeUpdate();
                    }
                }
                try (ResultSet rs = s.executeQuery("SELECT b FROM jdbc_bytea ORDER BY id")) {
                    for (int i = 0; i < values.length; i++) {
                        rs.next();
                        byte[] got = rs.getBytes(1);
                        if (!Arrays.equals(got, values[i])) {
                            throw new CheckFailed("bytea row " + i + ": expected " + show(values[i]) + ", got " + show(got));
                        }
                    }
                }
            }
        });

        check("server_prepared_binary", () -> {
            // One PreparedStatement run 12 times: from the 5th execution pgJDBC
            // uses a named server-side statement and binary results.
            try (Connection c = connect(); Statement s = c.createStatement()) {
                s.execute(String.format(TYPES_DDL, "jdbc_prep"));
                try (PreparedStatement ins = c.prepareStatement("INSERT INTO jdbc_prep VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)")) {
                    for (int i = 0; i < 12; i++) {  // the INSERT crosses the threshold too
                        Row base = ROWS[i % ROWS.length];
                        bindRow(ins, new Row(100 + i, base.big, base.name, base.score, base.active, base.price,
                                base.day, base.at, base.atTz));
                        eq(ins.executeUpdate(), 1, "INSERT #" + i);
                    }
                }
                PGStatement pgs;
                try (PreparedStatement q = c.prepareStatement("SELECT * FROM jdbc_prep WHERE id = ?")) {
                    pgs = q.unwrap(PGStatement.class);
                    eq(pgs.getPrepareThreshold(), 5, "default prepareThreshold");
                    for (int i = 0; i < 12; i++) {
                        Row base = ROWS[i % ROWS.length];
                        Row want = utc(new Row(100 + i, base.big, base.name, base.score, base.active, base.price,
                                base.day, base.at, base.atTz));
                        q.setInt(1, 100 + i);
                        try (ResultSet rs = q.executeQuery()) {
                            if (!rs.next()) throw new CheckFailed("execution " + (i + 1) + ": no row");
                            eq(readRow(rs), want, "execution " + (i + 1));
                            eq(rs.next(), false, "execution " + (i + 1) + ": one row");
                            PGResultSetMetaData md = rs.getMetaData().unwrap(PGResultSetMetaData.class);
                            if (i >= 5) {
                                eq(pgs.isUseServerPrepare(), true, "server-prepared after the threshold");
                                // Binary results for the types pgJDBC decodes in binary.
                                for (String col : new String[] {"id", "big", "score", "price", "day", "at", "at_tz"}) {
                                    eq(md.getFormat(rs.findColumn(col)), 1, "execution " + (i + 1) + ": format of " + col);
                                }
                            } else if (i == 0) {
                                eq(md.getFormat(1), 0, "first execution: text results");
                            }
                        }
                    }
                }
                // A prepared aggregate with two parameters, also past the threshold.
                try (PreparedStatement q = c.prepareStatement("SELECT count(*), max(big) FROM jdbc_prep WHERE id >= ? AND id < ?")) {
                    for (int i = 0; i < 8; i++) {
                        q.setInt(1, 100);
                        q.setInt(2, 101 + i);
                        try (ResultSet rs = q.executeQuery()) {
                            rs.next();
                            eq(rs.getLong(1), (long) (i + 1), "count, execution " + (i + 1));
                        }
                    }
                }
            }
        });

        check("batch", () -> {
            try (Connection c = connect(); Statement s = c.createStatement()) {
                s.execute("CREATE TABLE jdbc_batch (id INT PRIMARY KEY, v TEXT)");
                try (PreparedStatement ps = c.prepareStatement("INSERT INTO jdbc_batch VALUES (?, ?)")) {
                    for (int i = 0; i < 100; i++) {
                        ps.setInt(1, i);
                        ps.setString(2, "v" + i);
                        ps.addBatch();
                    }
                    int[] counts = ps.executeBatch();
                    eq(counts.length, 100, "batch update counts");
                    for (int n : counts) eq(n, 1, "batch update count");
                }
                eq(scalarLong(c, "SELECT count(*) FROM jdbc_batch"), 100L, "rows after batch");
            }
        });

        check("materialized_view", () -> {
            try (Connection c = connect(); Statement s = c.createStatement()) {
                s.execute("CREATE TABLE jdbc_mv_src (id INT PRIMARY KEY, grp TEXT NOT NULL, amount INT)");
                s.execute("CREATE MATERIALIZED VIEW jdbc_mv AS "
                        + "SELECT grp, count(*) AS n, sum(amount) AS total FROM jdbc_mv_src GROUP BY grp");
                s.executeUpdate("INSERT INTO jdbc_mv_src VALUES (1, 'a', 10), (2, 'a', 5), (3, 'b', 7)");
                eq(readView(c), "a:2:15 b:1:7", "view after INSERT");
                try (PreparedStatement ps = c.prepareStatement("UPDATE jdbc_mv_src SET amount = ? WHERE id = ?")) {
                    ps.setInt(1, 100);
                    ps.setInt(2, 2);
                    eq(ps.executeUpdate(), 1, "UPDATE count");
                }
                eq(readView(c), "a:2:110 b:1:7", "view after UPDATE");
                eq(s.executeUpdate("DELETE FROM jdbc_mv_src WHERE grp = 'b'"), 1, "DELETE count");
                eq(readView(c), "a:2:110", "view after DELETE");
            }
        });

        check("transactions", () -> {
            try (Connection c = connect(); Connection reader = connect(); Statement s = c.createStatement()) {
                s.execute("CREATE TABLE jdbc_tx (id INT PRIMARY KEY, v TEXT)");
                c.setAutoCommit(false);  // pgJDBC sends BEGIN before the next statement
                try (PreparedStatement ps = c.prepareStatement("INSERT INTO jdbc_tx VALUES (?, ?)")) {
                    ps.setInt(1, 1);
                    ps.setString(2, "rolled back");
                    ps.executeUpdate();
                    c.rollback();
                    eq(ids(reader, "jdbc_tx"), List.of(), "after rollback");

                    for (int id : new int[] {1, 2}) {
                        ps.setInt(1, id);
                        ps.setString(2, "v" + id);
                        ps.executeUpdate();
                    }
                    eq(ids(reader, "jdbc_tx"), List.of(), "other session before commit");
                    c.commit();
                    eq(ids(reader, "jdbc_tx"), List.of(1, 2), "after commit");

                    ps.setInt(1, 3);
                    ps.executeUpdate();
                    Savepoint sp = c.setSavepoint();
                    ps.setInt(1, 4);
                    ps.executeUpdate();
                    c.rollback(sp);
                    c.commit();
                    eq(ids(reader, "jdbc_tx"), List.of(1, 2, 3), "after savepoint rollback + commit");

                    ps.setInt(1, 5);
                    ps.executeUpdate();
                    ps.setInt(1, 1);
                    expectSqlState(ps::executeUpdate, "23505", "duplicate key inside transaction");
                    expectSqlState(() -> scalarLong(c, "SELECT 1"), "25P02", "statement in failed transaction");
                    c.rollback();
                    eq(ids(reader, "jdbc_tx"), List.of(1, 2, 3), "failed transaction changed nothing");
                }
                c.setAutoCommit(true);
            }
        });

        check("errors", () -> {
            try (Connection c = connect(); Statement s = c.createStatement()) {
                s.execute("CREATE TABLE jdbc_err (id INT PRIMARY KEY, v TEXT NOT NULL)");
                expectSqlState(() -> s.executeQuery("SELECT * FROM jdbc_no_such_table"), "42P01", "undefined table");
                expectSqlState(() -> s.execute("SELEC 1"), "42601", "syntax error");
                expectSqlState(() -> s.executeQuery("SELECT nope FROM jdbc_err"), "42703", "undefined column");
                s.executeUpdate("INSERT INTO jdbc_err VALUES (1, 'x')");
                try (PreparedStatement ps = c.prepareStatement("INSERT INTO jdbc_err VALUES (?, ?)")) {
                    ps.setInt(1, 1);
                    ps.setString(2, "y");
                    expectSqlState(ps::executeUpdate, "23505", "unique violation (prepared)");
                    ps.setInt(1, 2);
                    ps.setNull(2, Types.VARCHAR);
                    expectSqlState(ps::executeUpdate, "23502", "not-null violation (prepared)");
                }
                eq(scalarLong(c, "SELECT count(*) FROM jdbc_err"), 1L, "count after errors");
            }
        });

        // ---- DatabaseMetaData: pgJDBC's catalog queries on pg_catalog.

        check("metadata_get_tables", () -> {
            try (Connection c = connect(); Statement s = c.createStatement()) {
                s.execute("CREATE TABLE jdbc_meta (id INT PRIMARY KEY, name TEXT NOT NULL, amount NUMERIC(10, 2))");
                s.execute("CREATE MATERIALIZED VIEW jdbc_meta_mv AS SELECT name, count(*) AS n FROM jdbc_meta GROUP BY name");
                Set<String> tables = new HashSet<>();
                try (ResultSet rs = c.getMetaData().getTables(null, "public", "jdbc_meta%", new String[] {"TABLE"})) {
                    while (rs.next()) tables.add(rs.getString("TABLE_NAME") + ":" + rs.getString("TABLE_TYPE"));
                }
                eq(tables, Set.of("jdbc_meta:TABLE"), "getTables(TABLE)");
                Set<String> views = new HashSet<>();
                try (ResultSet rs = c.getMetaData().getTables(null, "public", "jdbc_meta%", new String[] {"MATERIALIZED VIEW"})) {
                    while (rs.next()) views.add(rs.getString("TABLE_NAME") + ":" + rs.getString("TABLE_TYPE"));
                }
                eq(views, Set.of("jdbc_meta_mv:MATERIALIZED VIEW"), "getTables(MATERIALIZED VIEW)");
            }
        });

        check("metadata_get_columns", () -> {
            try (Connection c = connect(); Statement s = c.createStatement()) {
                s.execute("CREATE TABLE jdbc_meta_cols (id INT PRIMARY KEY, name TEXT NOT NULL, amount NUMERIC(10, 2))");
                List<String> cols = new ArrayList<>();
                try (ResultSet rs = c.getMetaData().getColumns(null, "public", "jdbc_meta_cols", "%")) {
                    while (rs.next()) {
                        cols.add(rs.getString("COLUMN_NAME") + ":" + rs.getString("TYPE_NAME") + ":" + rs.getInt("DATA_TYPE")
                                + ":" + rs.getInt("COLUMN_SIZE") + ":" + rs.getInt("DECIMAL_DIGITS")
                                + ":" + rs.getString("IS_NULLABLE") + ":" + rs.getInt("ORDINAL_POSITION"));
                    }
                }
                eq(cols, List.of("id:int4:4:10:0:NO:1", "name:text:12:2147483647:0:NO:2", "amount:numeric:2:10:2:YES:3"),
                        "getColumns");
            }
        });

        // ResultSetMetaData beyond the RowDescription's types: pgJDBC asks
        // the catalog about the table OID and column number each result
        // column names (tools such as DBeaver use these to edit results).
        check("result_set_metadata", () -> {
            try (Connection c = connect(); Statement s = c.createStatement()) {
                s.execute("CREATE TABLE jdbc_rsmd (id INT PRIMARY KEY, name VARCHAR(20) NOT NULL, note TEXT)");
                try (ResultSet rs = s.executeQuery("SELECT id, name, note, id + 1 AS next FROM jdbc_rsmd")) {
                    java.sql.ResultSetMetaData md = rs.getMetaData();
                    PGResultSetMetaData pg = md.unwrap(PGResultSetMetaData.class);
                    List<String> got = new ArrayList<>();
                    for (int i = 1; i <= md.getColumnCount(); i++) {
                        got.add(md.getColumnName(i) + ":" + pg.getBaseTableName(i) + ":" + pg.getBaseColumnName(i)
                                + ":" + md.isNullable(i) + ":" + md.getColumnTypeName(i) + ":" + md.getPrecision(i));
                    }
                    eq(got, List.of("id:jdbc_rsmd:id:0:int4:10", "name:jdbc_rsmd:name:0:varchar:20",
                            "note:jdbc_rsmd:note:1:text:2147483647", "next:::2:int8:19"), "ResultSetMetaData");
                }
            }
        });

        check("metadata_get_primary_keys", () -> {
            try (Connection c = connect(); Statement s = c.createStatement()) {
                s.execute("CREATE TABLE jdbc_meta_pk (a INT, b TEXT, v INT, PRIMARY KEY (a, b))");
                List<String> pk = new ArrayList<>();
                try (ResultSet rs = c.getMetaData().getPrimaryKeys(null, "public", "jdbc_meta_pk")) {
                    while (rs.next()) pk.add(rs.getString("COLUMN_NAME") + ":" + rs.getInt("KEY_SEQ"));
                }
                pk.sort(null);
                eq(pk, List.of("a:1", "b:2"), "getPrimaryKeys");
            }
        });
    }

    static String readView(Connection c) throws SQLException {
        refresh(c, "jdbc_mv");
        StringBuilder sb = new StringBuilder();
        try (Statement s = c.createStatement(); ResultSet rs = s.executeQuery("SELECT grp, n, total FROM jdbc_mv ORDER BY grp")) {
            while (rs.next()) {
                if (sb.length() > 0) sb.append(' ');
                sb.append(rs.getString(1)).append(':').append(rs.getLong(2)).append(':').append(rs.getLong(3));
            }
        }
        return sb.toString();
    }

    // ------------------------------------------------------------------ main

    public static void main(String[] args) {
        String port = System.getenv("WEIR_PORT");
        if (port == null || port.isEmpty()) {
            System.err.println("WEIR_PORT must be set to the port of a running Weir server");
            System.exit(2);
        }
        String host = Objects.requireNonNullElse(System.getenv("WEIR_HOST"), "127.0.0.1");
        url = "jdbc:postgresql://" + host + ":" + port + "/weir?user=weir&connectTimeout=10&socketTimeout=60";
        TimeZone.setDefault(TimeZone.getTimeZone("UTC"));  // deterministic java.sql.Timestamp and startup TimeZone

        registerChecks();
        Set<String> only = new HashSet<>();
        String filter = System.getenv("WEIR_CHECKS");
        if (filter != null && !filter.isEmpty()) only.addAll(Arrays.asList(filter.split(",")));
        boolean strict = "1".equals(System.getenv("WEIR_STRICT"));

        int passed = 0, failed = 0, xfailed = 0, xpassed = 0;
        for (Check ch : CHECKS) {
            if (!only.isEmpty() && !only.contains(ch.name)) continue;
            String name = "jdbc." + ch.name;
            try {
                ch.body.run();
                if (ch.pendingReason == null) {
                    passed++;
                    System.out.println("PASS " + name);
                } else {
                    xpassed++;
                    System.out.println("XPASS " + name + ": pending check passes now (" + ch.pendingReason + "); make it a check");
                }
            } catch (Throwable e) {
                String msg = (e.getClass().getSimpleName() + ": " + e.getMessage()).replace("\n", " | ");
                if (ch.pendingReason == null || strict) {
                    failed++;
                    System.out.println("FAIL " + name + ": " + msg);
                } else {
                    xfailed++;
                    System.out.println("XFAIL " + name + " (" + ch.pendingReason + "): " + msg);
                }
                if (System.getenv("WEIR_TRACEBACK") != null) e.printStackTrace(System.out);
            }
            System.out.flush();
        }
        if (passed + failed + xfailed + xpassed == 0) {
            System.out.println("jdbc: no check ran");
            System.exit(1);
        }
        if (xfailed + xpassed > 0) {
            System.out.println("jdbc: pending checks: " + xfailed + " expected failures, " + xpassed + " unexpected passes");
        }
        System.out.println("jdbc: " + passed + " passed, " + failed + " failed");
        System.exit(failed > 0 ? 1 : 0);
    }
}
