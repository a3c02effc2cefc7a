"""Class names and curated class prompts of the real corpora (PTB-XL, CPSC2018, CSN).

Prompts are clinical statements in the register of machine ECG reports, used as the text side
of zero-shot classification. `PROMPTS[corpus][class_name]` holds several phrasings per class
(the canonical short statement first, then its defining criteria) and covers every class of
every label set (tested, with no phrasing shared between classes). `prompts(corpus, name,
fallback)` returns a class's phrasings and `prompt(...)` its canonical one.
"""

from __future__ import annotations

# --- PTB-XL (scp_statements.csv of PTB-XL 1.0.3) -------------------------------------------
PTBXL_SUPERDIAGNOSTIC = ("NORM", "MI", "STTC", "CD", "HYP")
PTBXL_SUBDIAGNOSTIC = (
    "NORM", "IMI", "AMI", "LMI", "PMI", "STTC", "NST_", "ISC_", "ISCA", "ISCI", "LAFB/LPFB",
    "IRBBB", "_AVB", "IVCD", "CRBBB", "CLBBB", "WPW", "ILBBB", "LVH", "LAO/LAE", "RVH",
    "RAO/RAE", "SEHYP",
)  # fmt: skip
PTBXL_FORM = (
    "NDT", "NST_", "DIG", "LNGQT", "ABQRS", "PVC", "STD_", "VCLVH", "QWAVE", "LOWT", "NT_",
    "PAC", "LPR", "INVT", "LVOLT", "HVOLT", "TAB_", "STE_", "PRC(S)",
)  # fmt: skip
PTBXL_RHYTHM = (
    "SR", "AFIB", "STACH", "SARRH", "SBRAD", "PACE", "SVARR", "BIGU", "AFLT", "SVTAC", "PSVT",
    "TRIGU",
)  # fmt: skip
PTBXL_LABEL_SETS = {
    "superdiagnostic": PTBXL_SUPERDIAGNOSTIC,
    "subdiagnostic": PTBXL_SUBDIAGNOSTIC,
    "form": PTBXL_FORM,
    "rhythm": PTBXL_RHYTHM,
}

# --- CPSC2018: classes 1..9 of REFERENCE.csv, and their SNOMED-CT codes in Challenge 2020 --
CPSC2018_CLASSES = ("NORM", "AF", "I-AVB", "LBBB", "RBBB", "PAC", "PVC", "STD", "STE")
CPSC2018_SNOMED = {
    "426783006": "NORM",  # sinus rhythm
    "164889003": "AF",
    "270492004": "I-AVB",
    "164909002": "LBBB",
    "59118001": "RBBB",
    "713427006": "RBBB",  # complete RBBB (scored as RBBB by the Challenge)
    "284470004": "PAC",
    "63593006": "PAC",  # supraventricular premature beats (scored as PAC)
    "164884008": "PVC",  # ventricular ectopics, the code of CPSC's PVC in Challenge 2020
    "427172004": "PVC",
    "17338001": "PVC",  # ventricular premature beats (scored as PVC)
    "429622005": "STD",
    "164931005": "STE",
}

_P = "ECG shows "
# Every class has several phrasings written from its clinical definition (name, then defining
# criteria), in the spirit of MERL's clinical-knowledge prompt expansion; the first phrasing
# is the canonical short statement. The consumers average the phrasings' embeddings. They
# were not chosen by any score on any split. Each stays under 25 words (the text towers
# truncate at 64 tokens). Stored without the "ECG shows " prefix; added below.
_PHRASINGS: dict[str, dict[str, tuple[str, ...]]] = {
    "ptbxl": {
        # superdiagnostic
        "NORM": (
            "normal ECG",
            "a normal tracing with sinus rhythm and normal intervals, axis, QRS complexes, ST "
            "segments and T waves",
            "no abnormality: normal conduction, normal QRS voltage and duration, no ST or T wave "
            "changes",
        ),
        "MI": (
            "myocardial infarction",
            "pathological Q waves with ST segment and T wave changes from infarcted myocardium",
            "evidence of heart muscle necrosis: abnormal Q waves, loss of R wave height, ST "
            "elevation or T wave inversion",
        ),
        "STTC": (
            "ST/T changes",
            "abnormal ventricular repolarization with ST segment deviation or T wave abnormalities",
            "ST segment depression or elevation and flattened or inverted T waves without "
            "infarction",
        ),
        "CD": (
            "conduction disturbance",
            "abnormal impulse conduction such as bundle branch block, fascicular block or "
            "atrioventricular block",
            "delayed or blocked conduction through the AV node, bundle branches or fascicles, "
            "with prolonged PR or wide QRS",
        ),
        "HYP": (
            "hypertrophy",
            "chamber hypertrophy or enlargement with increased QRS voltage or abnormal P waves",
            "signs of enlarged atria or thickened ventricular walls: tall R waves, strain pattern, "
            "or broad or peaked P waves",
        ),
        # subdiagnostic
        "IMI": (
            "inferior myocardial infarction",
            "pathological Q waves and ST-T changes in leads II, III and aVF",
            "infarction of the inferior wall with Q waves in the inferior leads",
        ),
        "AMI": (
            "anterior myocardial infarction",
            "pathological Q waves or poor R wave progression with ST-T changes in leads V1 to V4",
            "infarction of the anterior or anteroseptal wall with Q waves in the precordial leads",
        ),
        "LMI": (
            "lateral myocardial infarction",
            "pathological Q waves and ST-T changes in leads I, aVL, V5 and V6",
            "infarction of the lateral wall with Q waves in the lateral leads",
        ),
        "PMI": (
            "posterior myocardial infarction",
            "tall broad R waves with ST depression in V1 to V3, the mirror image of a posterior "
            "infarction",
            "infarction of the posterior wall with an R/S ratio above 1 in V1 and V2 and upright "
            "T waves",
        ),
        "NST_": (
            "non-specific ST changes",
            "slight ST segment deviation that does not meet criteria for ischemia or injury",
            "minor non-diagnostic ST segment changes of uncertain cause",
        ),
        "ISC_": (
            "non-specific ischemic changes",
            "ST depression and T wave inversion suggestive of myocardial ischemia without a "
            "defined territory",
            "repolarization changes consistent with ischemia: horizontal or downsloping ST "
            "depression and symmetric negative T waves",
        ),
        "ISCA": (
            "ischemic changes in anterior leads",
            "ST depression or T wave inversion in the anteroseptal or anterolateral chest leads",
            "myocardial ischemia of the anterior wall with ST-T abnormalities in leads V1 to V6",
        ),
        "ISCI": (
            "ischemic changes in inferior leads",
            "ST depression or T wave inversion in leads II, III and aVF",
            "myocardial ischemia of the inferior wall with ST-T abnormalities in the inferior "
            "leads",
        ),
        "LAFB/LPFB": (
            "left anterior or left posterior fascicular block",
            "block of one fascicle of the left bundle: marked left or right axis deviation with a "
            "narrow QRS",
            "hemiblock with qR and rS patterns in the limb leads and a shifted frontal QRS axis",
        ),
        "IRBBB": (
            "incomplete right bundle branch block",
            "an rSR' pattern in V1 with a QRS duration between 110 and 120 ms",
            "partially delayed right ventricular conduction with RSR' in V1 and QRS shorter than "
            "120 ms",
        ),
        "_AVB": (
            "atrioventricular block",
            "delayed or interrupted conduction from atria to ventricles: first, second or third "
            "degree AV block",
            "AV nodal conduction block with a prolonged PR interval, dropped QRS complexes or AV "
            "dissociation",
        ),
        "IVCD": (
            "non-specific intraventricular conduction delay",
            "a QRS duration over 110 ms without the morphology of left or right bundle branch "
            "block",
            "widened QRS complexes from slowed ventricular conduction not meeting bundle branch "
            "block criteria",
        ),
        "CRBBB": (
            "complete right bundle branch block",
            "a QRS of at least 120 ms with rsR' in V1 and a broad slurred S wave in I and V6",
            "blocked right bundle conduction: wide QRS, M-shaped complex in V1 and V2, wide "
            "terminal S in lateral leads",
        ),
        "CLBBB": (
            "complete left bundle branch block",
            "a QRS of at least 120 ms with broad notched R waves in I, aVL, V5, V6 and no septal "
            "q waves",
            "blocked left bundle conduction: wide QRS, deep QS or rS in V1 and discordant ST-T "
            "changes",
        ),
        "WPW": (
            "Wolff-Parkinson-White pre-excitation",
            "a short PR interval under 120 ms, a delta wave and a widened QRS from an accessory "
            "pathway",
            "ventricular pre-excitation through an accessory pathway with a slurred QRS upstroke",
        ),
        "ILBBB": (
            "incomplete left bundle branch block",
            "a QRS between 110 and 119 ms with left bundle branch block morphology and absent "
            "septal q waves",
            "partially delayed left ventricular conduction with an LBBB-like QRS shorter than "
            "120 ms",
        ),
        "LVH": (
            "left ventricular hypertrophy",
            "increased QRS voltage in the left chest leads with ST depression and asymmetric T "
            "inversion in V5 and V6",
            "a thickened left ventricle: tall R waves in lateral leads, deep S waves in V1 and V2, "
            "often left axis",
        ),
        "LAO/LAE": (
            "left atrial overload or enlargement",
            "a broad notched P wave over 120 ms in lead II with a deep negative terminal P in V1",
            "P mitrale: prolonged bifid P waves from left atrial enlargement",
        ),
        "RVH": (
            "right ventricular hypertrophy",
            "right axis deviation and a dominant R wave in V1 with an R/S ratio above 1",
            "a thickened right ventricle with tall R in V1, deep S in V5 and V6 and right "
            "ventricular strain",
        ),
        "RAO/RAE": (
            "right atrial overload or enlargement",
            "tall peaked P waves over 2.5 mm in lead II",
            "P pulmonale: pointed high-amplitude P waves in the inferior leads from right atrial "
            "enlargement",
        ),
        "SEHYP": (
            "septal hypertrophy",
            "deep narrow Q waves in the lateral and inferior leads from a thickened "
            "interventricular septum",
            "hypertrophy of the interventricular septum with prominent septal q waves and tall R "
            "waves in V1 and V2",
        ),
        # form
        "NDT": (
            "non-diagnostic T wave abnormalities",
            "T wave changes that are not diagnostic of any particular condition",
            "borderline T wave abnormality of no definite diagnostic value",
        ),
        "DIG": (
            "digitalis effect",
            "scooped, sagging ST depression with a short QT interval typical of digoxin",
            "the effect of digoxin therapy: reverse tick ST segments, flattened T waves and a "
            "shortened QT",
        ),
        "LNGQT": (
            "long QT interval",
            "a corrected QT interval over 450 ms in men or over 460 ms in women",
            "prolonged ventricular repolarization with a lengthened QTc",
        ),
        "ABQRS": (
            "abnormal QRS complex",
            "abnormal QRS morphology such as notching, slurring, fragmentation or poor R wave "
            "progression",
            "QRS complexes of abnormal shape not explained by bundle branch block",
        ),
        "PVC": (
            "premature ventricular complexes",
            "early wide bizarre QRS complexes without a preceding P wave, followed by a "
            "compensatory pause",
            "ectopic beats arising in the ventricles before the next expected sinus beat",
        ),
        "STD_": (
            "non-specific ST depression",
            "ST segment depression below the baseline without a clear ischemic pattern",
            "mild horizontal or sagging ST depression in some leads of uncertain cause",
        ),
        "VCLVH": (
            "voltage criteria for left ventricular hypertrophy",
            "QRS amplitudes beyond left ventricular hypertrophy voltage limits without "
            "repolarization changes",
            "high left ventricular voltage: S in V1 plus R in V5 over 35 mm, or R in aVL over "
            "11 mm",
        ),
        "QWAVE": (
            "Q waves present",
            "pathological Q waves wider than 40 ms or deeper than a quarter of the R wave",
            "prominent initial negative deflections of the QRS complex in two or more contiguous "
            "leads",
        ),
        "LOWT": (
            "low amplitude T waves",
            "flat T waves with an amplitude below a tenth of the R wave",
            "T waves of reduced height in leads with a dominant R wave",
        ),
        "NT_": (
            "non-specific T wave changes",
            "mild T wave flattening or shape changes in several leads, non-specific in nature",
            "T wave alterations with no specific underlying cause",
        ),
        "PAC": (
            "premature atrial complexes",
            "early P waves of different shape followed by a normal narrow QRS complex",
            "ectopic atrial beats arriving before the next expected sinus beat, with a "
            "non-compensatory pause",
        ),
        "LPR": (
            "prolonged PR interval",
            "a PR interval longer than 200 ms",
            "a lengthened time from P wave onset to QRS onset, exceeding 0.20 seconds",
        ),
        "INVT": (
            "inverted T waves",
            "negative T waves in leads where they are normally upright",
            "T wave inversion in several leads",
        ),
        "LVOLT": (
            "low QRS voltage",
            "QRS amplitudes below 5 mm in all limb leads or below 10 mm in all chest leads",
            "small QRS complexes with reduced amplitude in the frontal and horizontal leads",
        ),
        "HVOLT": (
            "high QRS voltage",
            "abnormally tall QRS complexes with increased amplitude in several leads",
            "QRS amplitudes above normal limits without other criteria for hypertrophy",
        ),
        "TAB_": (
            "T wave abnormality",
            "abnormal T wave morphology: flattened, biphasic, peaked or inverted T waves",
            "a repolarization abnormality affecting the T waves",
        ),
        "STE_": (
            "non-specific ST elevation",
            "ST segment elevation above the baseline without the pattern of acute infarction",
            "mild ST elevation in some leads of uncertain significance",
        ),
        "PRC(S)": (
            "premature complexes",
            "early ectopic beats of atrial, junctional or ventricular origin interrupting the "
            "rhythm",
            "one or more extrasystoles occurring before the next expected normal beat",
        ),
        # rhythm
        "SR": (
            "sinus rhythm",
            "a regular rhythm at 60 to 100 beats per minute with an upright P wave before every "
            "QRS in lead II",
            "a rhythm originating in the sinus node with constant P wave morphology and PR "
            "interval",
        ),
        "AFIB": (
            "atrial fibrillation",
            "an irregularly irregular rhythm with no P waves and a fibrillatory baseline",
            "chaotic atrial activity with absent P waves and variable RR intervals",
        ),
        "STACH": (
            "sinus tachycardia",
            "a sinus rhythm faster than 100 beats per minute with normal P waves",
            "an accelerated heart rate from the sinus node, with a P wave before each QRS",
        ),
        "SARRH": (
            "sinus arrhythmia",
            "sinus rhythm whose PP interval varies by more than 120 ms, often with breathing",
            "an irregular sinus rhythm with normal P waves and a rate that changes with "
            "respiration",
        ),
        "SBRAD": (
            "sinus bradycardia",
            "a sinus rhythm slower than 60 beats per minute with normal P waves",
            "a slow heart rate from the sinus node, with a P wave before each QRS",
        ),
        "PACE": (
            "normally functioning artificial pacemaker",
            "pacemaker spikes followed by captured P waves or wide paced QRS complexes",
            "a paced rhythm with sharp stimulus artifacts triggering the atria or ventricles",
        ),
        "SVARR": (
            "supraventricular arrhythmia",
            "an abnormal rhythm originating above the ventricles, in the atria or the AV junction",
            "irregular or ectopic atrial or junctional activity with narrow QRS complexes",
        ),
        "BIGU": (
            "bigeminal pattern",
            "every normal beat followed by a premature beat, in alternating pairs",
            "bigeminy: a repeating pattern of one sinus beat and one ectopic beat",
        ),
        "AFLT": (
            "atrial flutter",
            "regular sawtooth flutter waves at about 300 per minute, often with 2:1 AV conduction",
            "a macro-reentrant atrial rhythm with saw-tooth F waves in leads II, III and aVF",
        ),
        "SVTAC": (
            "supraventricular tachycardia",
            "a narrow QRS tachycardia above 100 beats per minute originating above the ventricles",
            "a fast regular rhythm from the atria or AV junction with narrow QRS complexes",
        ),
        "PSVT": (
            "paroxysmal supraventricular tachycardia",
            "a sudden-onset, sudden-ending regular narrow complex tachycardia of 150 to 250 beats "
            "per minute",
            "an episode of abrupt supraventricular tachycardia, usually AV nodal or AV reentry",
        ),
        "TRIGU": (
            "trigeminal pattern",
            "every third beat premature: two normal beats followed by one ectopic beat, repeating",
            "trigeminy: a repeating group of two sinus beats and one premature beat",
        ),
    },
    "cpsc2018": {
        "NORM": (
            "sinus rhythm, normal ECG",
            "a normal sinus rhythm at 60 to 100 beats per minute with normal P waves, PR, QRS, ST "
            "segments and T waves",
            "a normal tracing without arrhythmia, conduction block or ST changes",
        ),
        "AF": (
            "atrial fibrillation",
            "an irregularly irregular rhythm with no P waves and a fibrillatory baseline",
            "chaotic atrial activity with absent P waves and variable RR intervals",
        ),
        "I-AVB": (
            "first degree atrioventricular block",
            "a PR interval longer than 200 ms with every P wave conducted",
            "delayed conduction from atria to ventricles with a constant prolonged PR interval",
        ),
        "LBBB": (
            "left bundle branch block",
            "a QRS of at least 120 ms with broad notched R waves in I, aVL, V5, V6 and no septal "
            "q waves",
            "blocked left bundle conduction: wide QRS, deep QS or rS in V1 and discordant ST-T "
            "changes",
        ),
        "RBBB": (
            "right bundle branch block",
            "a QRS of at least 120 ms with rsR' in V1 and a broad slurred S wave in I and V6",
            "blocked right bundle conduction: wide QRS, M-shaped complex in V1 and V2, wide "
            "terminal S in lateral leads",
        ),
        "PAC": (
            "premature atrial contraction",
            "early P waves of different shape followed by a normal narrow QRS complex",
            "ectopic atrial beats arriving before the next expected sinus beat, with a "
            "non-compensatory pause",
        ),
        "PVC": (
            "premature ventricular contraction",
            "early wide bizarre QRS complexes without a preceding P wave, followed by a "
            "compensatory pause",
            "ectopic beats arising in the ventricles before the next expected sinus beat",
        ),
        "STD": (
            "ST segment depression",
            "horizontal or downsloping ST depression of at least 0.5 mm at the J point in two "
            "contiguous leads",
            "an ST segment lying below the isoelectric baseline",
        ),
        "STE": (
            "ST segment elevation",
            "ST elevation of at least 1 mm at the J point in two contiguous leads",
            "an ST segment raised above the isoelectric baseline",
        ),
    },
    # Chapman-Shaoxing-Ningbo: acronyms of ConditionNames_SNOMED-CT.csv (ecg-arrhythmia 1.0.0).
    # Its English names are loose translations; the wording here follows the SNOMED-CT code
    # of each row: STE "ST extension" is 164930006 (ST interval abnormal), STTU "ST tilt up" is
    # 164931005 (ST elevation), VET "ventricular escape trigeminy" is 251180001 (ventricular
    # trigeminy).
    "chapman_shaoxing": {
        "1AVB": (
            "first degree atrioventricular block",
            "a PR interval longer than 200 ms with every P wave conducted",
            "delayed conduction from atria to ventricles with a constant prolonged PR interval",
        ),
        "2AVB": (
            "second degree atrioventricular block",
            "intermittent failure of AV conduction, with some P waves not followed by a QRS "
            "complex",
            "dropped ventricular beats from intermittently blocked atrioventricular conduction",
        ),
        "2AVB1": (
            "second degree atrioventricular block, Mobitz type I",
            "Wenckebach periodicity: a progressively lengthening PR interval until a P wave is "
            "not conducted",
            "gradual PR prolongation ending in a dropped QRS complex, then a shorter PR again",
        ),
        "2AVB2": (
            "second degree atrioventricular block, Mobitz type II",
            "sudden non-conducted P waves with a constant PR interval in the conducted beats",
            "intermittently dropped QRS complexes without preceding PR prolongation",
        ),
        "3AVB": (
            "third degree atrioventricular block",
            "complete heart block: P waves and QRS complexes independent, the atrial rate faster "
            "than the ventricular rate",
            "complete atrioventricular dissociation with a slow junctional or ventricular escape "
            "rhythm",
        ),
        "ABI": (
            "atrial bigeminy",
            "every sinus beat followed by a premature atrial beat, alternating",
            "a repeating pair of one normal beat and one early ectopic P wave with a narrow QRS",
        ),
        "ALS": (
            "left axis deviation",
            "a frontal plane QRS axis more negative than -30 degrees",
            "a QRS predominantly positive in lead I and negative in leads II and aVF",
        ),
        "APB": (
            "atrial premature beats",
            "early P waves of different shape followed by a normal narrow QRS complex",
            "ectopic atrial beats arriving before the next expected sinus beat, with a "
            "non-compensatory pause",
        ),
        "AQW": (
            "abnormal Q waves",
            "pathological Q waves wider than 40 ms or deeper than a quarter of the R wave",
            "prominent initial negative deflections of the QRS complex in two or more contiguous "
            "leads",
        ),
        "ARS": (
            "right axis deviation",
            "a frontal plane QRS axis greater than +90 degrees",
            "a QRS predominantly negative in lead I and positive in lead aVF",
        ),
        "AVB": (
            "atrioventricular block",
            "delayed or interrupted conduction from atria to ventricles: first, second or third "
            "degree AV block",
            "AV nodal conduction block with a prolonged PR interval, dropped QRS complexes or AV "
            "dissociation",
        ),
        "CCR": (
            "counterclockwise rotation",
            "an early precordial transition zone, with the R wave exceeding the S wave already in "
            "V1 or V2",
            "the heart rotated counterclockwise about its long axis, with tall R waves early in "
            "the chest leads",
        ),
        "CR": (
            "clockwise rotation",
            "a late precordial transition zone, with deep S waves persisting to V5 or V6",
            "the heart rotated clockwise about its long axis, with R equal to S only in V5 or V6",
        ),
        "ERV": (
            "early repolarization",
            "J point elevation with notching or slurring of the terminal QRS and concave ST "
            "elevation",
            "a benign early repolarization pattern with upward concave ST elevation in lateral or "
            "inferior leads",
        ),
        "FQRS": (
            "fragmented QRS",
            "additional notches or an RSR' pattern within a narrow QRS in two contiguous leads",
            "QRS fragmentation from myocardial scar, with extra R' waves or notched S waves",
        ),
        "IDC": (
            "intraventricular conduction differences",
            "a non-specific intraventricular conduction disturbance with altered QRS shape",
            "aberrant ventricular conduction producing QRS complexes of unusual width or shape",
        ),
        "IVB": (
            "intraventricular block",
            "a QRS wider than 110 ms that meets neither left nor right bundle branch block "
            "criteria",
            "slowed conduction within the ventricular myocardium with a widened QRS complex",
        ),
        "JEB": (
            "junctional escape beats",
            "late narrow QRS complexes from the AV junction after a pause, with absent or "
            "retrograde P waves",
            "escape beats from the atrioventricular junction when the sinus rate slows",
        ),
        "JPT": (
            "junctional premature beats",
            "early narrow QRS complexes from the AV junction with absent, inverted or retrograde "
            "P waves",
            "premature beats arising in the atrioventricular junction before the next sinus beat",
        ),
        "LBBB": (
            "left bundle branch block",
            "a QRS of at least 120 ms with broad notched R waves in I, aVL, V5, V6 and no septal "
            "q waves",
            "blocked left bundle conduction: wide QRS, deep QS or rS in V1 and discordant ST-T "
            "changes",
        ),
        "LBBBB": (
            "left posterior fascicular block",
            "right axis deviation beyond +90 degrees with rS in I, qR in III and a narrow QRS",
            "block of the posterior fascicle of the left bundle, without right ventricular "
            "hypertrophy",
        ),
        "LFBBB": (
            "left anterior fascicular block",
            "left axis deviation beyond -45 degrees with qR in aVL and rS in II, III and aVF",
            "block of the anterior fascicle of the left bundle with a narrow QRS",
        ),
        "LVH": (
            "left ventricular hypertrophy",
            "increased QRS voltage in the left chest leads with ST depression and asymmetric T "
            "inversion in V5 and V6",
            "a thickened left ventricle: tall R waves in lateral leads, deep S waves in V1 and V2, "
            "often left axis",
        ),
        "LVQRSAL": (
            "low QRS voltage in all leads",
            "QRS amplitudes below 5 mm in every limb lead and below 10 mm in every chest lead",
            "generalized low voltage of the QRS complexes in both limb and precordial leads",
        ),
        "LVQRSCL": (
            "low QRS voltage in the chest leads",
            "QRS amplitudes below 10 mm in all precordial leads V1 to V6",
            "reduced QRS voltage confined to the precordial leads",
        ),
        "LVQRSLL": (
            "low QRS voltage in the limb leads",
            "QRS amplitudes below 5 mm in all limb leads I, II, III, aVR, aVL and aVF",
            "reduced QRS voltage confined to the limb leads",
        ),
        "MI": (
            "myocardial infarction",
            "pathological Q waves with ST segment and T wave changes from infarcted myocardium",
            "evidence of heart muscle necrosis: abnormal Q waves, loss of R wave height, ST "
            "elevation or T wave inversion",
        ),
        "MIBW": (
            "posterior wall myocardial infarction",
            "tall broad R waves with ST depression in V1 to V3, the mirror image of a posterior "
            "infarction",
            "infarction of the posterior wall with an R/S ratio above 1 in V1 and V2 and upright "
            "T waves",
        ),
        "MIFW": (
            "anterior wall myocardial infarction",
            "pathological Q waves or poor R wave progression with ST-T changes in leads V1 to V4",
            "infarction of the anterior or anteroseptal wall with Q waves in the precordial leads",
        ),
        "MILW": (
            "inferior wall myocardial infarction",
            "pathological Q waves and ST-T changes in leads II, III and aVF",
            "infarction of the inferior wall with Q waves in the inferior leads",
        ),
        "MISW": (
            "lateral wall myocardial infarction",
            "pathological Q waves and ST-T changes in leads I, aVL, V5 and V6",
            "infarction of the lateral wall with Q waves in the lateral leads",
        ),
        "PRIE": (
            "prolonged PR interval",
            "a PR interval longer than 200 ms",
            "a lengthened time from P wave onset to QRS onset, exceeding 0.20 seconds",
        ),
        "PWC": (
            "P wave changes",
            "abnormal P wave shape, duration or amplitude, such as notched, peaked, flat or "
            "biphasic P waves",
            "an atrial depolarization abnormality altering the P wave morphology",
        ),
        "QTIE": (
            "prolonged QT interval",
            "a corrected QT interval over 450 ms in men or over 460 ms in women",
            "prolonged ventricular repolarization with a lengthened QTc",
        ),
        "RAH": (
            "right atrial enlargement",
            "tall peaked P waves over 2.5 mm in lead II",
            "P pulmonale: pointed high-amplitude P waves in the inferior leads from right atrial "
            "enlargement",
        ),
        "RBBB": (
            "right bundle branch block",
            "a QRS of at least 120 ms with rsR' in V1 and a broad slurred S wave in I and V6",
            "blocked right bundle conduction: wide QRS, M-shaped complex in V1 and V2, wide "
            "terminal S in lateral leads",
        ),
        "RVH": (
            "right ventricular hypertrophy",
            "right axis deviation and a dominant R wave in V1 with an R/S ratio above 1",
            "a thickened right ventricle with tall R in V1, deep S in V5 and V6 and right "
            "ventricular strain",
        ),
        "STDD": (
            "ST segment depression",
            "horizontal or downsloping ST depression of at least 0.5 mm at the J point in two "
            "contiguous leads",
            "an ST segment lying below the isoelectric baseline",
        ),
        "STE": (
            "ST segment prolongation",
            "an abnormally long ST interval that delays the onset of the T wave",
            "an ST interval abnormality with a lengthened isoelectric ST segment",
        ),
        "STTC": (
            "ST-T changes",
            "combined ST segment and T wave abnormalities of ventricular repolarization",
            "ST segment deviation together with flattened or inverted T waves",
        ),
        "STTU": (
            "ST segment elevation",
            "ST elevation of at least 1 mm at the J point in two contiguous leads",
            "an ST segment raised above the isoelectric baseline",
        ),
        "TWC": (
            "T wave changes",
            "flattened, biphasic or inverted T waves of altered shape",
            "abnormal T wave morphology or amplitude from altered repolarization",
        ),
        "TWO": (
            "inverted T waves",
            "negative T waves in leads where they are normally upright",
            "T waves pointing opposite to the main QRS deflection",
        ),
        "UW": (
            "U waves",
            "a prominent positive deflection after the T wave, best seen in V2 and V3",
            "visible U waves following the T wave, as in hypokalemia or bradycardia",
        ),
        "VB": (
            "ventricular bigeminy",
            "every sinus beat followed by a premature ventricular complex",
            "alternating normal narrow beats and wide premature ventricular beats",
        ),
        "VEB": (
            "ventricular escape beats",
            "late wide QRS complexes without a preceding P wave after a long pause",
            "escape beats from a ventricular focus when higher pacemakers fail",
        ),
        "VFW": (
            "ventricular fusion beats",
            "QRS complexes of intermediate shape from simultaneous sinus and ventricular "
            "activation",
            "fusion of a conducted supraventricular impulse with a ventricular ectopic impulse",
        ),
        "VPB": (
            "ventricular premature beats",
            "early wide bizarre QRS complexes without a preceding P wave, followed by a "
            "compensatory pause",
            "ectopic beats arising in the ventricles before the next expected sinus beat",
        ),
        "VPE": (
            "ventricular pre-excitation",
            "early activation of the ventricles through an accessory pathway, with a short PR and "
            "a delta wave",
            "a shortened PR interval and a slurred initial QRS upstroke from pre-excitation",
        ),
        "VET": (
            "ventricular trigeminy",
            "every third beat a premature ventricular complex: two normal beats, then one wide "
            "ectopic beat",
            "a repeating group of two sinus beats followed by one beat of ventricular origin",
        ),
        "WAVN": (
            "wandering pacemaker in the atrioventricular node",
            "a pacemaker shifting between the sinus node and the AV junction, with changing P "
            "waves and PR intervals",
            "a wandering pacemaker with at least three P wave morphologies and varying PR "
            "intervals",
        ),
        "WPW": (
            "Wolff-Parkinson-White pattern",
            "a short PR interval under 120 ms, a delta wave and a QRS wider than 110 ms",
            "an accessory atrioventricular pathway producing delta waves and secondary ST-T "
            "changes",
        ),
        "SB": (
            "sinus bradycardia",
            "a sinus rhythm slower than 60 beats per minute with normal P waves",
            "a slow heart rate from the sinus node, with a P wave before each QRS",
        ),
        "SR": (
            "sinus rhythm",
            "a regular rhythm at 60 to 100 beats per minute with an upright P wave before every "
            "QRS in lead II",
            "a rhythm originating in the sinus node with constant P wave morphology and PR "
            "interval",
        ),
        "AFIB": (
            "atrial fibrillation",
            "an irregularly irregular rhythm with no P waves and a fibrillatory baseline",
            "chaotic atrial activity with absent P waves and variable RR intervals",
        ),
        "ST": (
            "sinus tachycardia",
            "a sinus rhythm faster than 100 beats per minute with normal P waves",
            "an accelerated heart rate from the sinus node, with a P wave before each QRS",
        ),
        "AF": (
            "atrial flutter",
            "regular sawtooth flutter waves at about 300 per minute, often with 2:1 AV conduction",
            "a macro-reentrant atrial rhythm with saw-tooth F waves in leads II, III and aVF",
        ),
        "SA": (
            "sinus arrhythmia",
            "sinus rhythm whose PP interval varies by more than 120 ms, often with breathing",
            "an irregular sinus rhythm with normal P waves and a rate that changes with "
            "respiration",
        ),
        "SVT": (
            "supraventricular tachycardia",
            "a narrow QRS tachycardia above 100 beats per minute originating above the ventricles",
            "a fast regular rhythm from the atria or AV junction with narrow QRS complexes",
        ),
        "AT": (
            "atrial tachycardia",
            "a regular tachycardia over 100 beats per minute driven by an ectopic atrial focus "
            "with abnormal P waves",
            "a fast atrial rhythm with non-sinus P waves preceding narrow QRS complexes",
        ),
        "AVNRT": (
            "atrioventricular nodal reentrant tachycardia",
            "a regular narrow complex tachycardia with P waves hidden in or just after the QRS",
            "reentry within the AV node, with a pseudo r' in V1 or pseudo S waves in the "
            "inferior leads",
        ),
        "AVRT": (
            "atrioventricular reentrant tachycardia",
            "a regular narrow complex tachycardia with retrograde P waves well after the QRS",
            "reentry through the AV node and an accessory pathway, with an RP interval over "
            "70 ms",
        ),
        "SAAWR": (
            "wandering atrial pacemaker",
            "a pacemaker shifting from the sinus node to atrial sites, with at least three "
            "different P wave shapes",
            "a sinus to atrial wandering rhythm with varying P wave morphology and PP intervals",
        ),
    },
}
PROMPTS: dict[str, dict[str, tuple[str, ...]]] = {
    corpus: {name: tuple(_P + p for p in phrasings) for name, phrasings in table.items()}
    for corpus, table in _PHRASINGS.items()
}


def classes(corpus: str, label_set: str | None = None) -> tuple[str, ...]:
    """Class names of a corpus with a fixed class list ('ptbxl' needs a label set)."""
    if corpus == "ptbxl":
        if label_set not in PTBXL_LABEL_SETS:
            raise ValueError(
                f"ptbxl label set {label_set!r}; expected one of {list(PTBXL_LABEL_SETS)}."
            )
        return PTBXL_LABEL_SETS[label_set]
    if corpus == "cpsc2018":
        return CPSC2018_CLASSES
    raise ValueError(
        f"corpus {corpus!r} has no fixed class list here; chapman_shaoxing's classes depend "
        "on the corpus (read them from the built dataset's info.metadata['classes'])."
    )


def prompts(corpus: str, name: str, fallback: str | None = None) -> tuple[str, ...]:
    """The phrasings of a class, canonical first; ('ECG shows <fallback>',) for a class without.

    A class name joined from several acronyms ('WAVN/SAAWR') takes its first one's phrasings.
    """
    table = PROMPTS.get(corpus, {})
    for key in (name, *name.split("/")):
        if key in table:
            return table[key]
    if fallback and fallback.strip():
        return (_P + fallback.strip().lower(),)
    raise KeyError(
        f"No prompt for class {name!r} of {corpus!r}: add one to "
        "scar_jax/data/real_labels.py PROMPTS or pass a fallback description."
    )


def prompt(corpus: str, name: str, fallback: str | None = None) -> str:
    """The canonical (first) phrasing of a class; see `prompts`."""
    return prompts(corpus, name, fallback)[0]
