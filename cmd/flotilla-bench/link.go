package main

import (
	"strings"
)

// nextLink returns the target of the rel="next" link in an RFC 8288 Link
// header value (several links may be comma-separated, rel may list several
// space-separated relation types, parameters may be quoted or not). The
// target is returned as written (often relative: resolve it against the
// request URL). ok is false when there is no next link.
func nextLink(header string) (target string, ok bool) {
	for _, link := range splitLinks(header) {
		link = strings.TrimSpace(link)
		if !strings.HasPrefix(link, "<") {
			continue
		}
		end := strings.IndexByte(link, '>')
		if end < 0 {
			continue
		}
		target := link[1:end]
		for _, param := range strings.Split(link[end+1:], ";") {
			k, v, found := strings.Cut(strings.TrimSpace(param), "=")
			if !found || !strings.EqualFold(strings.TrimSpace(k), "rel") {
				continue
			}
			v = strings.Trim(strings.TrimSpace(v), `"`)
			for _, rel := range strings.Fields(v) {
				if strings.EqualFold(rel, "next") {
					return target, true
				}
			}
		}
	}
	return "", false
}

// splitLinks splits a Link header at the commas between links, not at
// commas inside <...> or inside quoted parameter values.
func splitLinks(h string) []string {
	var out []string
	inURI, inQuote := false, false
	start := 0
	for i := 0; i < len(h); i++ {
		switch c := h[i]; {
		case c == '<' && !inQuote:
			inURI = true
		case c == '>' && !inQuote:
			inURI = false
		case c == '"' && !inURI:
			inQuote = !inQuote
		case c == ',' && !inURI && !inQuote:
			out = append(out, h[start:i])
			start = i + 1
		}
	}
	return append(out, h[start:])
}
