#!/usr/bin/perl
# Runs Sisimai (Debian's libsisimai-perl) on the corpus' replies, as bench/corpus.py --sisimai asks: one JSON
# object per input line ({"code", "enhanced", "text"}), one per output line ({"reason", "soft"}). Each reply is
# wrapped in a minimal RFC 3464 delivery status notification, the input Sisimai is made for: its Status field
# is the reply's enhanced code (or its class, X.0.0, from the reply code; absent when the reply has neither),
# its Diagnostic-Code the reply. "soft" is Sisimai's own verdict: 1 soft, 0 hard, -1 not a bounce.
use strict;
use warnings;
use JSON::PP;
use Sisimai;

my $json = JSON::PP->new->utf8->canonical;
binmode STDOUT;
$| = 1;

while( my $line = <STDIN> ) {
    my $reply = $json->decode($line);
    my $found = eval { Sisimai->make(\(notification($reply)), 'delivered' => 1, 'vacation' => 1) } || [];
    my $first = $found->[0];
    my $answer = $first ? { 'reason' => $first->reason.'', 'soft' => $first->softbounce + 0 }
                        : { 'reason' => '', 'soft' => -1 };
    print $json->encode($answer), "\n";
}

sub notification {
    my $reply = shift;
    my $text  = $reply->{'text'} =~ s/\s*[\r\n]+\s*/ /gr;
    my $code  = $reply->{'code'};
    $text = "$code $text" if defined $code && $text !~ /\A\s*$code\b/;
    my $status = $reply->{'enhanced'} // (defined $code ? substr($code, 0, 1).'.0.0' : undef);
    my $field  = defined $status ? "Status: $status\n" : '';
    return <<"MAIL";
From: Mail Delivery System <MAILER-DAEMON\@mx.sender.example>
To: <news\@sender.example>
Subject: Undelivered Mail Returned to Sender
Date: Thu, 1 Jan 2026 00:00:00 +0000
Message-ID: <dsn\@mx.sender.example>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="dsn-boundary"

--dsn-boundary
Content-Type: text/plain; charset=utf-8

Your message could not be delivered to one or more recipients.

--dsn-boundary
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.sender.example

Final-Recipient: rfc822; someone\@recipient.example
Action: failed
${field}Remote-MTA: dns; mx.recipient.example
Diagnostic-Code: smtp; $text

--dsn-boundary
Content-Type: message/rfc822

From: <news\@sender.example>
To: <someone\@recipient.example>
Subject: Spring sale
Message-ID: <original\@sender.example>

Hello.

--dsn-boundary--
MAIL
}
