#!/usr/bin/python3
# examples/view-link/view_link.py: the page behind the view link of
# aimroute's lead emails (README.md beside this file).
#
# GET <path>?token=T calls aimroute.open_view_link(T), which marks the lead
# viewed and stops its re-routing while the dealer of that email holds it,
# then aimroute.view_link_lead(T) for the lead's key details.  A link that
# no longer counts (the lead went to another dealer, or no such token)
# gets the page "This link is no longer yours".  The database login needs
# only the role aimroute_view_link.
#
# Usage: /usr/bin/python3 view_link.py [--host 127.0.0.1] [--port 8080]
#                                      [--dsn 'host=... dbname=... user=...']
# The DSN is a libpq connection string; without one, libpq's PG*
# environment variables apply.

import argparse
import html
import http.server
import logging
import re
import urllib.parse
import zoneinfo

import psycopg2

STYLE = """body{font:16px/1.5 system-ui,sans-serif;margin:2em auto;max-width:38em;padding:0 1em;color:#222}
h1{font-size:1.4em}table{border-collapse:collapse}th,td{text-align:left;padding:.2em 1em .2em 0;vertical-align:top}
th{color:#666;font-weight:normal}.note{background:#eef6ee;border-left:4px solid #3a3;padding:.5em 1em}
.gone{background:#fbeeee;border-left:4px solid #c33;padding:.5em 1em}"""


def page(title, body):
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width">'
            f'<title>{html.escape(title)}</title><style>{STYLE}</style></head>'
            f'<body>{body}</body></html>\n').encode()


def when(ts, tz):
    return ts.astimezone(zoneinfo.ZoneInfo(tz)).strftime('%Y-%m-%d %H:%M ') + tz


def lead_page(lead):
    place = ', '.join(x for x in (lead['address'], lead['city'],
                                  ' '.join(x for x in (lead['state_code'], lead['postal_code']) if x),
                                  lead['country']) if x)
    rows = [('Lead', lead['lead_id']), ('Received', when(lead['received_at'], lead['timezone'])),
            ('Brand', lead['brand']), ('Product', lead['product_code']),
            ('Name', ' '.join(x for x in (lead['first_name'], lead['last_name']) if x)),
            ('Email', lead['email']), ('Phone', lead['phone']), ('Address', place),
            ('Comment', lead['comment'])]
    table = ''.join(f'<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>'
                    for k, v in rows if v not in (None, ''))
    return page(f"Lead {lead['lead_id']}",
                f"<h1>Lead {lead['lead_id']} for {html.escape(lead['dealer_name'])}</h1>"
                f"<p class=\"note\">Marked viewed {html.escape(when(lead['viewed_at'], lead['timezone']))}: "
                f"the lead is yours and is no longer re-routed to another dealer.</p><table>{table}</table>")


GONE = page('This link is no longer yours',
            '<h1>This link is no longer yours</h1><p class="gone">This lead has gone to another dealer, '
            'or the link is not one we sent. Nothing was changed.</p>')


class Handler(http.server.BaseHTTPRequestHandler):
    dsn = ''

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        token = urllib.parse.parse_qs(url.query).get('token', [''])[0]
        if url.path == '/favicon.ico':
            return self.reply(404, page('Not found', '<h1>Not found</h1>'))
        try:
            conn = psycopg2.connect(self.dsn, application_name='aimroute view link')
            try:
                with conn, conn.cursor() as cur:   # one transaction
                    cur.execute('SELECT aimroute.open_view_link(%s)', (token,))
                    opened = cur.fetchone()[0]
                    cur.execute('SELECT * FROM aimroute.view_link_lead(%s)', (token,))
                    row = cur.fetchone()
                    lead = dict(zip([c.name for c in cur.description], row)) if row else None
            finally:
                conn.close()
        except psycopg2.Error as e:
            logging.error('the database: %s', str(e).strip())
            return self.reply(503, page('Try again', '<h1>Try again in a minute</h1>'
                                        '<p>The lead could not be opened just now. Nothing was changed.</p>'))
        if opened and lead:
            self.reply(200, lead_page(lead))
        else:
            self.reply(404, GONE)

    def reply(self, status, body):
        self.send_response(status)
        self.send_header('Content-Type', 'text/html; charset=utf-8')
        self.send_header('Content-Length', str(len(body)))
        self.send_header('Cache-Control', 'no-store')
        self.send_header('Referrer-Policy', 'no-referrer')  # the token is in the URL
        self.send_header('X-Content-Type-Options', 'nosniff')
        self.send_header('Content-Security-Policy', "default-src 'none'; style-src 'unsafe-inline'")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args):  # the access log, without the token
        logging.info('%s %s', self.address_string(), re.sub(r'token=[^&\s]*', 'token=...', fmt % args))


def main():
    ap = argparse.ArgumentParser(description='The page behind the view link of aimroute lead emails.')
    ap.add_argument('--host', default='127.0.0.1', help='address to listen on (default: loopback only)')
    ap.add_argument('--port', type=int, default=8080)
    ap.add_argument('--dsn', default='', help='libpq connection string of a login in role aimroute_view_link')
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format='%(asctime)s %(message)s')
    Handler.dsn = args.dsn
    server = http.server.ThreadingHTTPServer((args.host, args.port), Handler)
    logging.info('listening on http://%s:%d/', args.host, server.server_port)
    server.serve_forever()


if __name__ == '__main__':
    main()
