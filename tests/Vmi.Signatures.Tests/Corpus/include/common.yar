/*
  Included by rules_meta_tags.yar (include paths are relative to the including
  file). Covers: rules defined in an included file, referenced from the
  including file; a private rule and a tagged rule from an include.
*/

private rule inc_has_hello
{
    strings:
        $h = "Hello" nocase
    condition:
        $h
}

rule inc_tagged : included shared
{
    meta:
        origin = "include/common.yar"
    condition:
        inc_has_hello
}
