package bgp

import (
	"context"
	"fmt"
	"log/slog"

	gobgplog "github.com/osrg/gobgp/v3/pkg/log"
)

// logger sends GoBGP's logs to slog. GoBGP's Info (every configuration
// step and message) goes to Debug; the speaker logs session changes itself.
type logger struct {
	log   *slog.Logger
	level gobgplog.LogLevel
}

func (l *logger) emit(lv slog.Level, msg string, fields gobgplog.Fields) {
	if !l.log.Enabled(context.Background(), lv) {
		return
	}
	attrs := make([]slog.Attr, 0, len(fields))
	for k, v := range fields {
		attrs = append(attrs, slog.Any(k, v))
	}
	l.log.LogAttrs(context.Background(), lv, "gobgp: "+msg, attrs...)
}

func (l *logger) Panic(msg string, f gobgplog.Fields) {
	l.emit(slog.LevelError, msg, f)
	panic(fmt.Sprintf("gobgp: %s %v", msg, f))
}

// Fatal: GoBGP reports broken invariants this way; a library must not
// exit the process, so it panics like Panic.
func (l *logger) Fatal(msg string, f gobgplog.Fields) { l.Panic(msg, f) }
func (l *logger) Error(msg string, f gobgplog.Fields) { l.emit(slog.LevelError, msg, f) }
func (l *logger) Warn(msg string, f gobgplog.Fields)  { l.emit(slog.LevelWarn, msg, f) }
func (l *logger) Info(msg string, f gobgplog.Fields)  { l.emit(slog.LevelDebug, msg, f) }
func (l *logger) Debug(msg string, f gobgplog.Fields) { l.emit(slog.LevelDebug-4, msg, f) }

func (l *logger) SetLevel(level gobgplog.LogLevel) { l.level = level }
func (l *logger) GetLevel() gobgplog.LogLevel {
	if l.log.Enabled(context.Background(), slog.LevelDebug-4) {
		return gobgplog.DebugLevel
	}
	return gobgplog.InfoLevel
}
