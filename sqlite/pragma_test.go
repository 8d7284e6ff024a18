package sqlite

import (
	"database/sql"
	"path/filepath"
	"testing"
)

func TestPragmas(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "lifeline.db"))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer s.Close()

	tests := []struct {
		name   string
		db     *sql.DB
		pragma string
		want   string
	}{
		{"WriterJournalMode", s.db, "journal_mode", "wal"},
		{"WriterSynchronousFull", s.db, "synchronous", "2"},
		{"WriterForeignKeys", s.db, "foreign_keys", "1"},
		{"WriterBusyTimeout", s.db, "busy_timeout", "5000"},
		{"ReaderJournalMode", s.rdb, "journal_mode", "wal"},
		{"ReaderQueryOnly", s.rdb, "query_only", "1"},
		{"ReaderBusyTimeout", s.rdb, "busy_timeout", "5000"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got string
			if err := tt.db.QueryRowContext(t.Context(), "PRAGMA "+tt.pragma).Scan(&got); err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("PRAGMA %s = %q, want %q", tt.pragma, got, tt.want)
			}
		})
	}
}

func TestReaderCannotWrite(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "lifeline.db"))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer s.Close()
	if _, err := s.rdb.ExecContext(t.Context(), `UPDATE event_log SET last_seq = 99`); err == nil {
		t.Fatal("write through the read pool succeeded")
	}
}
