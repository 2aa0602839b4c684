package certs

import (
	"context"
	"log/slog"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// zapToSlog gives certmagic, which logs through zap, moat's slog logger.
func zapToSlog(l *slog.Logger) *zap.Logger {
	return zap.New(&slogCore{l: l})
}

type slogCore struct {
	l     *slog.Logger
	attrs []slog.Attr
}

func (c *slogCore) Enabled(lvl zapcore.Level) bool {
	return c.l.Enabled(context.Background(), level(lvl))
}

func (c *slogCore) With(fields []zapcore.Field) zapcore.Core {
	return &slogCore{l: c.l, attrs: append(append([]slog.Attr(nil), c.attrs...), attrs(fields)...)}
}

func (c *slogCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(e.Level) {
		return ce.AddCore(e, c)
	}
	return ce
}

func (c *slogCore) Write(e zapcore.Entry, fields []zapcore.Field) error {
	all := append(append([]slog.Attr(nil), c.attrs...), attrs(fields)...)
	if e.LoggerName != "" {
		all = append(all, slog.String("logger", e.LoggerName))
	}
	c.l.LogAttrs(context.Background(), level(e.Level), e.Message, all...)
	return nil
}

func (c *slogCore) Sync() error { return nil }

func level(l zapcore.Level) slog.Level {
	switch {
	case l >= zapcore.ErrorLevel:
		return slog.LevelError
	case l == zapcore.WarnLevel:
		return slog.LevelWarn
	case l == zapcore.InfoLevel:
		return slog.LevelInfo
	default:
		return slog.LevelDebug
	}
}

func attrs(fields []zapcore.Field) []slog.Attr {
	enc := zapcore.NewMapObjectEncoder()
	for _, f := range fields {
		f.AddTo(enc)
	}
	out := make([]slog.Attr, 0, len(enc.Fields))
	for k, v := range enc.Fields {
		out = append(out, slog.Any(k, v))
	}
	return out
}
