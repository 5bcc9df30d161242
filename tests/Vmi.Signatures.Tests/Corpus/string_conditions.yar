/*
  Covers: conditions over strings — $s, #s, #s in (a..b), @s (= @s[1]), @s[i],
  !s (= !s[1]), !s[i], $s at N, $s in (a..b), any/all/none/N of them,
  N of ($a*, $b), N of (...) with wildcards, percentages (50% of them,
  100% of ($a*)), "of ... in (a..b)", for any/all/N of (...) : ( @ > x ),
  for ... : ( # ... ) and ( ! ... ), for all i in (1..#a) : ( @a[i] ... ),
  for any i in (1,2,3), for N i in (...), out-of-range @s[i] (undefined),
  string counts compared in arithmetic, anonymous strings ($), and/or/not
  precedence.
  Inputs: repeat.bin (main), text.bin, hex.bin, empty.bin.
*/

rule sc_count
{
    strings:
        $a = "abc"
    condition:
        #a == 5
}

rule sc_count_in_range
{
    strings:
        $a = "abc"
    condition:
        #a in (0..20) == 2 and #a in (0..filesize) == #a
}

rule sc_first_offset
{
    strings:
        $a = "abc"
    condition:
        @a == @a[1] and @a[1] < @a[2]
}

rule sc_offsets_listed
{
    strings:
        $a = "abc"
    condition:
        @a[1] == 0x10 and @a[2] == 0x14 and @a[5] > 0x40
}

rule sc_offset_out_of_range
{
    strings:
        $a = "abc"
    condition:
        @a[100] == 0 or not defined @a[100]
}

rule sc_length
{
    strings:
        $r = /x+y/
    condition:
        !r == !r[1] and !r[1] >= 2 and !r[2] > 0
}

rule sc_at
{
    strings:
        $start = "START"
        $a = "abc"
    condition:
        $start at 0 and $a at 0x10 and not $a at 0x11
}

rule sc_in_range
{
    strings:
        $a = "abc"
        $end = "END!"
    condition:
        $a in (0..0x13) and $end in (filesize - 10..filesize)
}

rule sc_any_of_them
{
    strings:
        $a = "abc"
        $b = "nothere"
    condition:
        any of them
}

rule sc_all_of_them
{
    strings:
        $a = "abc"
        $b = "nothere"
    condition:
        all of them
}

rule sc_none_of_them
{
    strings:
        $a = "nothere"
        $b = "neither"
    condition:
        none of them
}

rule sc_n_of_set
{
    strings:
        $a1 = "abc"
        $a2 = "START"
        $a3 = "nothere"
        $b = "END!"
    condition:
        2 of ($a*) and 3 of ($a*, $b) and not 4 of ($a*, $b)
}

rule sc_n_of_them
{
    strings:
        $a = "abc"
        $b = "START"
        $c = "nothere"
    condition:
        2 of them
}

rule sc_percent
{
    strings:
        $a = "abc"
        $b = "START"
        $c = "nothere"
        $d = "neither"
    condition:
        50% of them and not 75% of them
}

rule sc_percent_set
{
    strings:
        $x1 = "abc"
        $x2 = "START"
    condition:
        100% of ($x*)
}

rule sc_of_in_range
{
    strings:
        $a = "abc"
        $b = "START"
    condition:
        all of them in (0..0x20) and not all of them in (0x8..0x20)
}

rule sc_for_of_offset
{
    strings:
        $a = "abc"
        $b = "START"
    condition:
        for any of ($a, $b) : ( @ > 10 ) and not for all of them : ( @ > 10 )
}

rule sc_for_of_count
{
    strings:
        $a1 = "abc"
        $a2 = "xyz"
    condition:
        for all of ($a*) : ( # >= 2 ) and for 1 of ($a*) : ( $ at 0x10 )
}

rule sc_for_of_length
{
    strings:
        $r1 = /x+y/
        $r2 = /ab+/
    condition:
        for all of ($r*) : ( ! >= 2 )
}

rule sc_for_all_i_offsets
{
    strings:
        $a = "abc"
    condition:
        for all i in (1..#a) : ( @a[i] >= 0x10 and @a[i] < filesize )
}

rule sc_for_i_increasing
{
    strings:
        $a = "abc"
    condition:
        for all i in (1..#a - 1) : ( @a[i] < @a[i + 1] )
}

rule sc_for_any_set
{
    strings:
        $a = "abc"
    condition:
        for any i in (1, 2, 3) : ( @a[i] == 0x14 )
}

rule sc_for_n_set
{
    condition:
        for 2 i in (1, 2, 3, 4) : ( i % 2 == 0 )
}

rule sc_for_none
{
    strings:
        $a = "abc"
    condition:
        for none i in (1..#a) : ( @a[i] == 0x11 )
}

rule sc_anonymous
{
    strings:
        $ = "abc"
        $ = "START"
    condition:
        all of them
}

rule sc_count_arith
{
    strings:
        $a = "abc"
        $x = "xyz"
        $n = "nothere"
    condition:
        #a + #x > 6 and #a * 2 == 10 and #n == 0 and not (@n[1] != 0)
}

rule sc_precedence
{
    strings:
        $a = "abc"
        $n = "nothere"
    condition:
        not $n and $a or $n and not $a
}

rule sc_zero_of
{
    strings:
        $a = "abc"
        $n = "nothere"
    condition:
        0 of them
}
