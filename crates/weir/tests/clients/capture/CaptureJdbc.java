// Records the SQL pgJDBC's DatabaseMetaData sends, for capture/pgjdbc.txt.
// Run against a real Postgres behind wirelog.py (which logs every statement
// and, with --server-version 14.13, makes pgJDBC take its Postgres 14 paths);
// markers written into the same log file separate the calls:
//
//   wirelog.py 55434 <pg port> --log pgjdbc.txt --server-version 14.13 &
//   java -cp /usr/share/java/postgresql.jar CaptureJdbc.java 55434 pgjdbc.txt
//
// Not a test: it asserts nothing and needs a real Postgres.
import java.io.FileWriter;
import java.sql.*;

public class CaptureJdbc {
    static String log;

    static void mark(String m) throws Exception {
        try (FileWriter w = new FileWriter(log, true)) {
            w.write("===== " + m + "\n");
        }
    }

    static void drain(ResultSet rs) throws SQLException {
        int n = 0;
        while (rs.next()) n++;
        rs.close();
        System.out.println("  rows: " + n);
    }

    public static void main(String[] args) throws Exception {
        log = args[1];
        mark("connect");
        try (Connection c = DriverManager.getConnection("jdbc:postgresql://127.0.0.1:" + args[0] + "/weir?user=weir")) {
            mark("setup (not part of capture)");
            try (Statement s = c.createStatement()) {
                s.execute("DROP MATERIALIZED VIEW IF EXISTS jdbc_meta_mv");
                s.execute("DROP TABLE IF EXISTS jdbc_meta");
                s.execute("CREATE TABLE jdbc_meta (id INT PRIMARY KEY, name TEXT NOT NULL, amount NUMERIC(10, 2))");
                s.execute("CREATE MATERIALIZED VIEW jdbc_meta_mv AS SELECT name, count(*) AS n FROM jdbc_meta GROUP BY name");
            }
            DatabaseMetaData md = c.getMetaData();
            mark("getTables(null, \"public\", \"jdbc_meta%\", {\"TABLE\"})");
            drain(md.getTables(null, "public", "jdbc_meta%", new String[] {"TABLE"}));
            mark("getTables(null, \"public\", \"jdbc_meta%\", {\"MATERIALIZED VIEW\"})");
            drain(md.getTables(null, "public", "jdbc_meta%", new String[] {"MATERIALIZED VIEW"}));
            mark("getTables(null, null, \"%\", null)");
            drain(md.getTables(null, null, "%", null));
            mark("getColumns(null, \"public\", \"jdbc_meta\", \"%\")");
            drain(md.getColumns(null, "public", "jdbc_meta", "%"));
            mark("getPrimaryKeys(null, \"public\", \"jdbc_meta\")");
            drain(md.getPrimaryKeys(null, "public", "jdbc_meta"));
            mark("end");
        }
    }
}
