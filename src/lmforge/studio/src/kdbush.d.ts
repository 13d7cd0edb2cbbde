// regl-scatterplot's copy of KDBush (its package has no exports map; the file is plain ESM)
declare module 'regl-scatterplot/src/kdbush-class.js' {
  const createKDBushClass: () => unknown;
  export default createKDBushClass;
}
