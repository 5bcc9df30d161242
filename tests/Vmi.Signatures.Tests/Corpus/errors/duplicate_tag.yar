/* Error case: duplicated tag (yara 4.2.3 rejects this file; so must we). */
rule a : t1 t1 { condition: true }
