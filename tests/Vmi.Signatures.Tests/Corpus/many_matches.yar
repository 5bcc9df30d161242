/*
  Covers: many matches of many strings in one input — overlapping matches of
  text strings (AAAA inside a run of A), nocase overlapping two runs, wide
  overlapping matches, hex strings with wildcards matching everywhere,
  regexes matched at every offset (greedy, so each match runs to the end of the
  run), dense digit runs (thousands of matches), matches at offset 0 and
  ending at the last byte, a regex and a hex string spanning the whole file
  (-s prints at most 512 bytes of data for text/regex, and at most 64 bytes then
  " ..." for hex strings), same string declared twice under two names.
  Inputs: repeat.bin (main), empty.bin, tiny.bin.
*/

rule mm_overlapping_text
{
    strings:
        $a4 = "AAAA"
        $ab = "abab"
        $xyz = "xyzxyz"
    condition:
        #a4 > 100 and #ab > 3 and #xyz == 2
}

rule mm_nocase_runs
{
    strings:
        $nc = "aaaa" nocase
    condition:
        #nc > 100
}

rule mm_wide_run
{
    strings:
        $w = "BB" wide
    condition:
        #w >= 10
}

rule mm_hex_everywhere
{
    strings:
        $h = { 41 41 ?? 41 }
        $d = { 3? 3? 3? }
    condition:
        #h > 100 and #d > 1000
}

rule mm_regex_every_offset
{
    strings:
        $r = /A{10,}/
        $digits = /[0-9]{3}/
    condition:
        #r > 100 and #digits > 1000
}

rule mm_offset_zero_and_end
{
    strings:
        $start = "START"
        $s0 = { 53 54 }
        $end = "END!"
        $last = { 21 }
    condition:
        $start at 0 and $s0 at 0 and $end at filesize - 4 and @last[#last] == filesize - 1
}

rule mm_whole_file_regex
{
    strings:
        $r = /START.*END!/s
    condition:
        !r == filesize
}

rule mm_whole_file_hex
{
    strings:
        $h = { 53 54 41 52 54 [-] 45 4E 44 21 }
    condition:
        $h at 0
}

rule mm_same_string_twice
{
    strings:
        $one = "xyz"
        $two = "xyz"
    condition:
        #one == #two and @one[2] == @two[2]
}

rule mm_all_counts
{
    strings:
        $a = "0123"
        $b = "4567"
        $c = "89"
    condition:
        for all of them : ( # > 50 )
}
